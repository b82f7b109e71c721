"""The worker process: the only place TensorFlow is imported.

`python -m ringserve.runtime.worker` starts one; `main.py` applies device, CPU and
thread settings, then imports TensorFlow through `model.py`. Nothing outside this
package imports TensorFlow (a test checks the frontend, supervisor and SDK).
"""
