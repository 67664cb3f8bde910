"""`soap eval`: the SOAP paper's measurements on EffiBench-format problems, for comparing models and loop
settings. One module per stage: dataset (read the records, build the programs), score (run one program in
the sandbox: pass, ET, peak, TMU), run (each problem through the loop, every round scored on the hidden
tests), metrics (the paper's table), report (Markdown, JSON, the plot)."""

PROFILES = ("both", "time", "memory", "summary", "none")  # the paper's ablations: what profile the model sees
TIMEOUT_S = 60.0  # a program's scoring: its timed samples and tracked runs (EffiBench stops one run at 10 s)
