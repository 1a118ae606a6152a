"""Hosted LLMs: list prices per million tokens, matched on the model name, shared by every importer.

A model behind an outside API becomes an `llm` node with `hosted` (lowered to `llm.remote`: network
latency and a price per token, no local hardware). `price_of` finds its list price; an unknown model
is priced at DEFAULT_PRICE and the importer says so in a warning.
"""
from __future__ import annotations

import re

# Hosted-model list prices, USD per million tokens (input, output). Matched on the model name (lower
# case, a vendor prefix such as `anthropic.` or `us.anthropic.` removed) by longest prefix; the provider
# does not matter (a Claude model behind openai_api_compatible or Bedrock is priced as Claude).
# Prices in CNY are converted at 7.2 CNY/USD. Each entry: (name prefix, in, out, source, date seen).
_OPENAI = "https://openai.com/api/pricing/"
_ANTHROPIC = "https://www.anthropic.com/pricing#api"
_DEEPSEEK = "https://api-docs.deepseek.com/quick_start/pricing"
_QWEN = "https://help.aliyun.com/zh/model-studio/models"
_GEMINI = "https://ai.google.dev/gemini-api/docs/pricing"
_MISTRAL = "https://mistral.ai/pricing#api-pricing"
PRICES: list[tuple[str, float, float, str, str]] = [
    ("gpt-4o-mini", 0.15, 0.60, _OPENAI, "2024-07-18"),
    ("gpt-4o", 2.50, 10.00, _OPENAI, "2024-10-01"),
    ("gpt-4.1-nano", 0.10, 0.40, _OPENAI, "2025-04-14"),
    ("gpt-4.1-mini", 0.40, 1.60, _OPENAI, "2025-04-14"),
    ("gpt-4.1", 2.00, 8.00, _OPENAI, "2025-04-14"),
    ("gpt-5-mini", 0.25, 2.00, _OPENAI, "2025-08-07"),
    ("gpt-5-nano", 0.05, 0.40, _OPENAI, "2025-08-07"),
    ("gpt-5", 1.25, 10.00, _OPENAI, "2025-08-07"),
    ("gpt-4-turbo", 10.00, 30.00, _OPENAI, "2024-04-09"),
    ("gpt-4", 30.00, 60.00, _OPENAI, "2024-04-09"),
    ("gpt-3.5-turbo", 0.50, 1.50, _OPENAI, "2024-01-25"),
    ("o1-mini", 1.10, 4.40, _OPENAI, "2025-01-31"),
    ("o3-mini", 1.10, 4.40, _OPENAI, "2025-01-31"),
    ("o1", 15.00, 60.00, _OPENAI, "2024-12-17"),
    ("claude-3-5-sonnet", 3.00, 15.00, _ANTHROPIC, "2024-10-22"),
    ("claude-3-7-sonnet", 3.00, 15.00, _ANTHROPIC, "2025-02-24"),
    ("claude-sonnet-4", 3.00, 15.00, _ANTHROPIC, "2025-05-22"),
    ("claude-3-5-haiku", 0.80, 4.00, _ANTHROPIC, "2024-11-04"),
    ("claude-3-haiku", 0.25, 1.25, _ANTHROPIC, "2024-03-13"),
    ("claude-3-sonnet", 3.00, 15.00, _ANTHROPIC, "2024-03-04"),
    ("claude-3-opus", 15.00, 75.00, _ANTHROPIC, "2024-03-04"),
    ("deepseek-chat", 0.27, 1.10, _DEEPSEEK, "2025-02-09"),
    ("deepseek-reasoner", 0.55, 2.19, _DEEPSEEK, "2025-02-09"),
    ("deepseek-coder", 0.27, 1.10, _DEEPSEEK + " (the API serves deepseek-coder as deepseek-chat)",
     "2025-02-09"),
    ("deepseek-v3", 0.28, 1.11, "https://www.volcengine.com/docs/82379/1099320 (CNY 2 / 8)",
     "2025-03-24"),
    ("deepseek-r1", 0.56, 2.22, "https://www.volcengine.com/docs/82379/1099320 (CNY 4 / 16)",
     "2025-02-01"),
    ("yi-large-turbo", 1.67, 1.67, "https://platform.lingyiwanwu.com/docs/pricing (CNY 12 / 12)",
     "2024-05-13"),
    ("yi-lightning", 0.14, 0.14, "https://platform.lingyiwanwu.com/docs/pricing (CNY 0.99 / 0.99)",
     "2024-10-16"),
    ("yi-large", 2.78, 2.78, "https://platform.lingyiwanwu.com/docs/pricing (CNY 20 / 20)", "2024-05-13"),
    ("qwen-max", 0.33, 1.33, _QWEN + " (CNY 2.4 / 9.6)", "2025-01-25"),
    ("qwen-plus", 0.11, 0.28, _QWEN + " (CNY 0.8 / 2)", "2024-09-19"),
    ("qwen-turbo", 0.04, 0.08, _QWEN + " (CNY 0.3 / 0.6)", "2024-09-19"),
    ("gemini-2.5-flash-lite", 0.10, 0.40, _GEMINI, "2025-07-22"),
    ("gemini-2.5-flash", 0.30, 2.50, _GEMINI + " (prompts up to 200k tokens)", "2025-06-17"),
    ("gemini-2.5-pro", 1.25, 10.00, _GEMINI + " (prompts up to 200k tokens)", "2025-06-17"),
    ("mistral-small", 0.10, 0.30, _MISTRAL, "2025-03-17"),
    ("mistral-large", 2.00, 6.00, _MISTRAL, "2024-11-18"),
]
DEFAULT_PRICE = (2.50, 10.00)  # an unknown hosted model: priced like gpt-4o, with a warning
LOCAL_PROVIDERS = ("ollama", "xinference", "localai", "openllm", "vllm", "triton_inference_server",
                   "gpustack", "lm_studio")


def price_of(model_name: str) -> tuple[float, float, str, str] | None:
    """(input $/M, output $/M, source, date) of a hosted model name, or None when not in PRICES."""
    name = model_name.lower().strip()
    name = re.sub(r"^(?:[a-z]{2}\.)?(?:anthropic|openai|meta|deepseek)[./]", "", name)
    name = name.split("/")[-1]           # a router's prefix: mistral/..., openrouter/openai/...
    best = None
    for prefix, pin, pout, src, date in PRICES:
        if name.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, pin, pout, src, date)
    return best[1:] if best else None


def provider_short(provider: str) -> str:
    """`langgenius/openai/openai` -> `openai`."""
    p = str(provider or "unknown").strip().split("/")[-1] or "unknown"
    return p.split(":")[0]



def vendor_of(source: str) -> str:
    """The provider a PRICES source names: `https://openai.com/api/pricing/` -> `openai`."""
    m = re.match(r"https?://(?:[a-z0-9-]+\.)*?([a-z0-9-]+)\.(?:com|ai|dev|cn)\b", source)
    return {"google": "gemini", "aliyun": "qwen", "lingyiwanwu": "01ai"}.get(m.group(1), m.group(1)) if m else "unknown"
