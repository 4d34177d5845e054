"""Data-plane adapters: one module per data plane, each turning its check request into a
``RequestView`` and a ``Decision`` into its response (``enforcement.adapters.base.Adapter``).
Adapters import nothing from collectors or detection code."""
