"""Connection settings as Prefect blocks: register them with ``prefect block register -m blocks``.

Importing this package defines the block classes only; nothing is loaded or saved.
"""

from blocks.data_lake import DataLakeBlock
from blocks.sales_api import SalesApiBlock
from blocks.warehouse import WarehouseBlock

__all__ = ["DataLakeBlock", "SalesApiBlock", "WarehouseBlock"]
