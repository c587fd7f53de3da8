import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The suite's models are tiny: one thread each, and the other core for the processes it starts."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
