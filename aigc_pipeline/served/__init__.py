"""Models behind an OpenAI-compatible endpoint (vLLM, SGLang, TGI, Ollama, llama.cpp, `transformers
serve`, hosted APIs): the fields a stage takes (`params`), request pacing (`limits`), one row's
request with retries and structured output (`client`), the batch on an event loop and the dry-run
estimate (`backend`), and a fault-injecting proxy for tests and benchmarks (`fault_proxy`).
Nothing here is imported until a served stage runs; the `openai` package is needed then (the
`served` extra).
"""
