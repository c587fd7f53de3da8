"""A trained CrossViT made ready to run elsewhere: checked ONNX, torch.export and safetensors
files (`export`), and int8 dynamic quantization for CPU inference (`quantize`)."""
