"""The attribution core: backward rules, aggregators (where gradients are taken), the noise streams and the compiled loop."""
