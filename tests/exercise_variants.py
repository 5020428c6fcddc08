"""Every exercise that asks the reader to change a notebook's parameters
cell: (exercise label, notebook, the parameters it sets). The values are the
exercise's; where it leaves a choice to the reader (a price), one plausible
choice. ``tests/test_exercise_variants.py`` runs each with papermill and
checks the glued prose; a test there also checks that no exercise asking for
a parameter change is missing from this list. A fourth item, where given, is
the message of the check the notebook is meant to stop at (the exercise's
answer is that it stops)."""

VARIANTS = [
    ("ex-batch-steps50", "batchsize-linear", {"steps": 50}),
    ("ex-batch-sigma", "batchsize-linear", {"noise_sigma": 2.5}),
    ("ex-batch-betas", "batchsize-mlp-adam", {"adam_betas": [0.9, 0.999]}),
    (
        "ex-circuits-vocab",
        "circuits-proofs",
        {"n_vocab": 12, "d_model_max": 14},
    ),
    ("ex-circuits-strength", "induction-lab", {"example_strength": 1.0}),
    # the solution says: a run this short stops at the notebook's check
    # that the heads formed, as it should
    (
        "ex-circuits-steps",
        "induction-trained",
        {"steps": 400},
        "head formed",
    ),
    (
        "ex-fermi-bf16",
        "fermi",
        {"gpu_flop_per_s": 0.989e15, "gpu_utilization": 0.4},
    ),
    ("ex-fermi-1t", "fermi", {"n_params_gpt6": 1e12}),
    ("ex-attn-gqa4", "attention-mha", {"n_kv_gqa": 4}),
    ("ex-moe-alpha", "moe-routing", {"alpha": 0.1}),
    ("ex-nf-bf16-lr", "formats-mixed-precision", {"lr": 0.05}),
    ("ex-nf-group-bits", "formats-linear", {"sweep_bits": 2}),
    ("ex-parallel-ranks", "parallel-data-zero", {"world_size": 4}),
    ("ex-costs-context", "cost-flops", {"seq_len": 32768}),
    (
        "ex-costs-mfu",
        "cost-flops",
        {"a100_flop_per_s": 0.989e15, "usd_per_gpu_hour": 3.0},
    ),
    ("ex-costs-mup-base", "cost-mup", {"base_width": 512}),
    ("ex-lora-rstar", "lora-basics", {"r_star": 8}),
    ("ex-prune-keep50", "pruning-lab", {"keep_ratio": 0.5}),
    ("ex-quant-act4", "quantization-lab", {"act_bits": 6}),
    ("ex-softprompt-support", "softprompt-maml", {"n_support": 1}),
    ("ex-softprompt-ftsteps", "softprompt-experiments", {"ft_steps": 10}),
]
