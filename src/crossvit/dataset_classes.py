"""What the labels of the built-in datasets mean, in label order.

Two layers need these names: data/ (the classes a run trains on) and model/registry.py (the small
variants sized for these datasets carry them in their metadata). A module of its own, importing
nothing, so that the model layer reads them without importing data/, which itself imports the model.
"""

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
