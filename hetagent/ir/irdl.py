"""Regenerate hetagent/ir/agent.irdl.mlir from the dialect table: python -m hetagent.ir.irdl"""
from pathlib import Path

from hetagent.ir.dialects import irdl_text

IRDL_PATH = Path(__file__).with_name("agent.irdl.mlir")

if __name__ == "__main__":
    IRDL_PATH.write_text(irdl_text())
    print(IRDL_PATH)
