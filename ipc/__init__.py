"""Every byte format that crosses a process boundary: wire frames, tensors, rings.

Nothing here imports asyncio, TensorFlow or any other ringserve layer.
"""
