"""What uses the library: the ImageNet tools (compress, evaluate, fine-tune), the demo, the
benchmarks, and reports. The tools in ``tools/`` are thin front ends over these."""
