"""Traceable copies: every recipient's copy of a model differs from everyone else's by keyed one-ulp
steps on a few tensors (the carriers), and a leaked copy names its recipient.

Pure Python over numpy, safetensors and gguf: no Django, no Celery, no app of the project, no torch.
What the web tier imports to serve bytes (`tracing.served` and what it uses) needs numpy alone.

  keys              the master key (TRACE_KEY), its id, and the keyed streams every mark derives from
  carriers          which tensors carry the mark, as a function of their names, shapes and files
  floats, marking   bit patterns of the float formats; the one-ulp steps on bf16, fp16 and fp32 weights
  safetensors_file  headers and tensor bytes, read strictly and written in any order
  served            a shard rewritten with its carriers last: the prefix all share, each one's tail
  leaks             reading a leaked copy: safetensors of any float dtype or GGUF, any subset of files
  tracer            scoring every recipient against a leak, and the result a command prints
  errors            TracingInputError, for a leak that cannot be read (exit code 2 for a command)
  attacks           what leakers do to a copy, simulated for the tests and the bench
  synthetic         a random LLaMA-shaped bf16 checkpoint for the tests and the bench
"""
