"""Keras plumbing: walking a model's graph, what each layer is to the rules, inputs and outputs, tokens, precision, devices."""
