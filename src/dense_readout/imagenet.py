"""ImageNet-1k class names, from timm's ImageNet info (not a hand-written list)."""

from __future__ import annotations

from functools import lru_cache

__all__ = ["class_name", "imagenet_class_names"]


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class descriptions in the standard 0..999 order.

    Example:
        >>> from dense_readout.imagenet import imagenet_class_names
        >>> imagenet_class_names()[285]
        'Egyptian cat'
    """
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i) for i in range(info.num_classes()))


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """WordNet ids (``n01440764`` ...) in the standard order."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_label_name(i) for i in range(info.num_classes()))


def class_name(index: int, names: tuple[str, ...] | None = None) -> str:
    """Name of class ``index`` (ImageNet by default), or ``'class <index>'``.

    Example:
        >>> from dense_readout.imagenet import class_name
        >>> class_name(285), class_name(1000), class_name(1, ("cat", "dog"))
        ('Egyptian cat', 'class 1000', 'dog')
    """
    names = imagenet_class_names() if names is None else names
    return names[index] if 0 <= index < len(names) else f"class {index}"
