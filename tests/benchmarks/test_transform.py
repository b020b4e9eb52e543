"""The transform benchmark's per-page breakdown (``python -m benchmarks.transform --pages``)."""

from __future__ import annotations

import pytest

from benchmarks.transform import main, page_costs


def test_the_page_breakdown_times_every_step_of_both_paths() -> None:
    costs = dict(page_costs(pages=3, page_size=300, reject_share=0.3, passes=2))
    assert list(costs) == [
        "scan (brackets, commas, keys outside strings)",
        "set aside (what the reader would read otherwise)",
        "Arrow's reader (the records kept)",
        "strict read (the three above)",
        "judged the strict way (read, rules, rejects)",
        "judged record by record (lossless parse, rules...)",
    ]
    assert all(ms > 0 for ms in costs.values()), costs
    # The whole strict way of a page includes its strict read.
    strict_read = costs["strict read (the three above)"]
    assert costs["judged the strict way (read, rules, rejects)"] > strict_read


def test_pages_prints_one_line_a_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--pages", "2", "--page-size", "200", "--reject-share", "0.1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2 realistic pages of 200 records, 10% rejects")
    assert len([line for line in lines if line.endswith("us a record")]) == 6
