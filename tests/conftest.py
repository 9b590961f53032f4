"""Test-session set-up shared by every test module."""
from extract.base import torch_before_tensorflow

# One pytest process imports both stacks; triton loaded after TensorFlow crashes the process (see the function).
torch_before_tensorflow()
