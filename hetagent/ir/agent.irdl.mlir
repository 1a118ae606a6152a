// Generated from hetagent/ir/dialects.py by `python -m hetagent.ir.irdl`; do not edit.
// Check the IR with: iree-opt --irdl-file=hetagent/ir/agent.irdl.mlir module.mlir
// Required attributes only: the optional ones (distributions, prefix reuse) are discardable.
irdl.dialect @agent {
  irdl.type @text {
    %p0 = irdl.base "#builtin.integer"
    irdl.parameters(tokens: %p0)
  }
  irdl.type @audio {
    %p0 = irdl.base "#builtin.integer"
    irdl.parameters(ms: %p0)
  }
  irdl.type @bytes {
    %p0 = irdl.base "#builtin.integer"
    irdl.parameters(count: %p0)
  }
  irdl.type @kv {
    %p0 = irdl.base "#builtin.integer"
    %p1 = irdl.base "#builtin.integer"
    irdl.parameters(tokens: %p0, nbytes: %p1)
  }
  irdl.type @vectors {
    %p0 = irdl.base "#builtin.integer"
    %p1 = irdl.base "#builtin.integer"
    irdl.parameters(count: %p0, dims: %p1)
  }
  irdl.attribute @place {
    %p0 = irdl.base "#builtin.string"
    %p1 = irdl.base "#builtin.integer"
    %p2 = irdl.base "#builtin.integer"
    %p3 = irdl.base "#builtin.integer"
    %p4 = irdl.base "#builtin.integer"
    %p5 = irdl.base "#builtin.string"
    irdl.parameters(device: %p0, tp: %p1, pp: %p2, batch: %p3, replicas: %p4, precision: %p5)
  }
  irdl.operation @input {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.integer"
    %a1 = irdl.base "#builtin.integer"
    %a2 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "text_tokens" = %a0, "audio_ms" = %a1, "bytes" = %a2}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @output {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    irdl.attributes {"node" = %node}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @join {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    irdl.attributes {"node" = %node}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @choose {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.array"
    irdl.attributes {"node" = %node, "probabilities" = %a0}
    irdl.operands(inputs: variadic %in)
    %out = irdl.is index
    irdl.results(out: %out)
  }
  irdl.operation @continue {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.float"
    %a1 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "expected_iterations" = %a0, "max_iterations" = %a1}
    irdl.operands(inputs: variadic %in)
    %out = irdl.is i1
    irdl.results(out: %out)
  }
}
irdl.dialect @llm {
  irdl.operation @call {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    %a2 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "model" = %a0, "prompt_tokens" = %a1, "output_tokens" = %a2}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @prefill {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "model" = %a0, "prompt_tokens" = %a1}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @kv_transfer {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    %a2 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "model" = %a0, "tokens" = %a1, "kv_bytes" = %a2}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @decode {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    %a2 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "model" = %a0, "prompt_tokens" = %a1, "output_tokens" = %a2}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @remote {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.string"
    %a2 = irdl.base "#builtin.integer"
    %a3 = irdl.base "#builtin.integer"
    %a4 = irdl.base "#builtin.float"
    %a5 = irdl.base "#builtin.float"
    %a6 = irdl.base "#builtin.float"
    %a7 = irdl.base "#builtin.float"
    irdl.attributes {"node" = %node, "provider" = %a0, "model" = %a1, "prompt_tokens" = %a2, "output_tokens" = %a3, "input_usd_per_million" = %a4, "output_usd_per_million" = %a5, "latency_ms" = %a6, "tokens_per_second" = %a7}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
}
irdl.dialect @expert {
  irdl.operation @gate {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    %a2 = irdl.base "#builtin.integer"
    %a3 = irdl.base "#builtin.integer"
    %a4 = irdl.base "#builtin.integer"
    %a5 = irdl.base "#builtin.string"
    irdl.attributes {"node" = %node, "model" = %a0, "prompt_tokens" = %a1, "output_tokens" = %a2, "experts" = %a3, "top_k" = %a4, "phase" = %a5}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @tp_prefill {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    %a2 = irdl.base "#builtin.integer"
    %a3 = irdl.base "#builtin.integer"
    %a4 = irdl.base "#builtin.integer"
    %a5 = irdl.base "#builtin.string"
    irdl.attributes {"node" = %node, "model" = %a0, "prompt_tokens" = %a1, "output_tokens" = %a2, "experts" = %a3, "top_k" = %a4, "phase" = %a5}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @tp_decode {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    %a2 = irdl.base "#builtin.integer"
    %a3 = irdl.base "#builtin.integer"
    %a4 = irdl.base "#builtin.integer"
    %a5 = irdl.base "#builtin.string"
    irdl.attributes {"node" = %node, "model" = %a0, "prompt_tokens" = %a1, "output_tokens" = %a2, "experts" = %a3, "top_k" = %a4, "phase" = %a5}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @merge {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    %a2 = irdl.base "#builtin.integer"
    %a3 = irdl.base "#builtin.integer"
    %a4 = irdl.base "#builtin.integer"
    %a5 = irdl.base "#builtin.string"
    irdl.attributes {"node" = %node, "model" = %a0, "prompt_tokens" = %a1, "output_tokens" = %a2, "experts" = %a3, "top_k" = %a4, "phase" = %a5}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
}
irdl.dialect @comm {
  irdl.operation @allreduce {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    %a2 = irdl.base "#builtin.string"
    irdl.attributes {"node" = %node, "model" = %a0, "bytes" = %a1, "phase" = %a2}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
}
irdl.dialect @speech {
  irdl.operation @stt {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    %a2 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "model" = %a0, "audio_ms" = %a1, "output_tokens" = %a2}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @frontend {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "model" = %a0, "audio_ms" = %a1}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @encode {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "model" = %a0, "audio_ms" = %a1}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @decode {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    %a2 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "model" = %a0, "audio_ms" = %a1, "output_tokens" = %a2}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @tts {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    %a2 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "model" = %a0, "text_tokens" = %a1, "audio_ms" = %a2}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @phonemize {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "model" = %a0, "text_tokens" = %a1}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @synthesize {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    %a2 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "model" = %a0, "text_tokens" = %a1, "audio_ms" = %a2}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
}
irdl.dialect @embed {
  irdl.operation @encode {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    %a2 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "model" = %a0, "tokens" = %a1, "texts" = %a2}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
}
irdl.dialect @memory {
  irdl.operation @search {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.integer"
    %a1 = irdl.base "#builtin.integer"
    %a2 = irdl.base "#builtin.integer"
    %a3 = irdl.base "#builtin.string"
    %a4 = irdl.base "#builtin.integer"
    %a5 = irdl.base "#builtin.integer"
    %a6 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "index_size" = %a0, "dims" = %a1, "top_k" = %a2, "embed_model" = %a3, "query_tokens" = %a4, "rerank" = %a5, "result_tokens" = %a6}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @vector_search {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.integer"
    %a1 = irdl.base "#builtin.integer"
    %a2 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "index_size" = %a0, "dims" = %a1, "top_k" = %a2}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @rerank {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.integer"
    %a2 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "model" = %a0, "top_k" = %a1, "tokens" = %a2}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @load {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "bytes" = %a0}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @store {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "bytes" = %a0}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
}
irdl.dialect @tool {
  irdl.operation @invoke {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.float"
    %a2 = irdl.base "#builtin.float"
    %a3 = irdl.base "#builtin.integer"
    %a4 = irdl.base "#builtin.integer"
    %a5 = irdl.base "#builtin.float"
    irdl.attributes {"node" = %node, "tool" = %a0, "latency_ms" = %a1, "latency_cv" = %a2, "request_bytes" = %a3, "response_bytes" = %a4, "cpu_ms" = %a5}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @lookup {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.float"
    %a2 = irdl.base "#builtin.float"
    %a3 = irdl.base "#builtin.integer"
    %a4 = irdl.base "#builtin.integer"
    irdl.attributes {"node" = %node, "tool" = %a0, "latency_ms" = %a1, "latency_cv" = %a2, "request_bytes" = %a3, "response_bytes" = %a4}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @compute {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.string"
    %a1 = irdl.base "#builtin.float"
    irdl.attributes {"node" = %node, "tool" = %a0, "cpu_ms" = %a1}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
}
irdl.dialect @compute {
  irdl.operation @code {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.float"
    irdl.attributes {"node" = %node, "cpu_ms" = %a0}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
  irdl.operation @fused {
    %in = irdl.any
    %node = irdl.base "#builtin.string"
    %a0 = irdl.base "#builtin.float"
    %a1 = irdl.base "#builtin.array"
    irdl.attributes {"node" = %node, "cpu_ms" = %a0, "parts" = %a1}
    irdl.operands(inputs: variadic %in)
    %out = irdl.any
    irdl.results(out: %out)
  }
}
