"""Model cards as the cost model sees them. The cards sit below every stage (hetagent/modelcards.py)
because decomposition reads them too (KV cache sizes, MoE structure)."""
from hetagent.modelcards import *  # noqa: F401,F403
from hetagent.modelcards import BYTES_PER_ELEMENT, MODEL_PRECISIONS, ModelCard, bytes_per_element  # noqa: F401
