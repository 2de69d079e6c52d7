"""Parameter-efficient fine-tuning: what trains of a backbone, and what is added to it.

freezing     frozen embeddings and layers, gradual unfreezing (a callback)
lora         low-rank adapters on the attention projections, merged for export
adapters     bottleneck adapters (Houlsby, Pfeiffer)
bitfit       only the backbone's biases train
prompt       soft-prompt vectors before the input, the backbone frozen
"""
