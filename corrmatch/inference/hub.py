"""The Hugging Face layout of a trained model, and what the Hub's failures become.

A ``save_pretrained`` folder holds ``model.safetensors`` (every tensor of the network), ``config.json``
(:meth:`corrmatch.Segmenter.config`) and a ``README.md`` model card rendered from :data:`CARD_TEMPLATE`
by ``huggingface_hub``'s :class:`~huggingface_hub.ModelHubMixin`, which also moves such folders to and
from the Hub. Anything that fails there, a network that cannot be reached included, is one
:class:`CheckpointError` line naming the folder or repository and what to do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, hf_hub_download
from safetensors.torch import save_file
from torch import nn

from corrmatch.errors import CheckpointError, UserError, first_line
from corrmatch.inference.loading import CONFIG_FILE, WEIGHTS_FILE

__all__ = [
    "CARD_FILE",
    "CARD_TEMPLATE",
    "card_values",
    "loading_errors",
    "upload_errors",
    "weights_file",
    "write_pretrained",
]

CARD_FILE = "README.md"
REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")

# Jinja template of the model card (huggingface_hub.ModelCard.from_template); card_data is the YAML header.
CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ method or "DeepLabV3+" }} semantic segmentation model

A DeepLabV3+ network trained with the `corrmatch` toolkit (method: {{ method or "unknown" }}).

- encoder `{{ network.encoder_name }}`, output stride {{ network.output_stride }}, ASPP rates
  {{ atrous_rates }}, {{ network.head }} decoder head of width {{ network.decoder_channels }}
- {{ num_classes }} classes, training crop {{ crop_size }}
- validation mIoU: {{ miou }}
- input: RGB, `(x/255 − mean)/std` with mean {{ mean }} and std {{ std }}

## Use

```python
from corrmatch import Segmenter

model = Segmenter.from_pretrained("<this folder or repository>")
labels = model.predict("image.jpg")  # class index per pixel, at the image's size
```

## Classes

| index | name | colour |
|---|---|---|
{% for name, colour in classes -%}
| {{ loop.index0 }} | {{ name }} | `{{ colour }}` |
{% endfor %}"""


def card_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """What :data:`CARD_TEMPLATE` shows of a ``config.json`` content."""
    miou = config.get("val_miou")
    return {
        "method": config.get("method"),
        "network": config["network"],
        "atrous_rates": tuple(config["network"]["atrous_rates"]),
        "num_classes": config["num_classes"],
        "crop_size": config["crop_size"],
        "miou": "unknown" if miou is None else f"{miou:.2f} %",
        "mean": tuple(config["mean"]),
        "std": tuple(config["std"]),
        "classes": [(name, tuple(colour)) for name, colour in zip(config["class_names"], config["palette"])],
    }


def write_pretrained(directory: Path, net: nn.Module, config: Mapping[str, Any], card: ModelCard) -> None:
    """Writes ``model.safetensors`` (every tensor of ``net``), ``config.json`` and the card into
    ``directory``, replacing what a previous save left there."""
    state = {key: value.detach().cpu().contiguous() for key, value in net.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    card.save(directory / CARD_FILE)


def weights_file(model_id: str, **download: Any) -> Path:
    """The ``model.safetensors`` of the folder ``model_id``, or of the Hub repository ``model_id``
    through the local cache (:func:`huggingface_hub.hf_hub_download` with ``download``'s ``revision``,
    ``token``, …)."""
    if Path(model_id).is_dir():
        return Path(model_id) / WEIGHTS_FILE
    return Path(hf_hub_download(model_id, WEIGHTS_FILE, **download))


@contextmanager
def loading_errors(source: str) -> Iterator[None]:
    """Loading ``source``, a ``save_pretrained`` folder or a Hub repository id: a folder's unreadable
    ``config.json``, and anything the Hub raises, become one :class:`CheckpointError` line."""
    folder = Path(source)
    if not folder.is_dir() and not REPO_ID.match(source):
        raise CheckpointError(f"no such folder: {source}")
    try:
        yield
    except UserError:
        raise
    except (OSError, ValueError) as error:
        if folder.is_dir():
            raise CheckpointError(
                f"{folder / CONFIG_FILE}: not the config.json of Segmenter.save_pretrained ({first_line(error)})"
            ) from None
        raise CheckpointError(
            f"{source}: no such folder, and no model from the Hugging Face Hub ({type(error).__name__}: "
            f"{first_line(error)}); check the network connection and the repository id (and `hf auth login` "
            "for a private one), or give a local folder"
        ) from None


@contextmanager
def upload_errors(repo_id: str) -> Iterator[None]:
    """Uploading to the Hub repository ``repo_id``: whatever fails (network, login, permission) is one
    :class:`CheckpointError` line."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:  # the upload is all network and Hub: every failure ends in one line
        raise CheckpointError(
            f"{repo_id}: the upload to the Hugging Face Hub failed ({type(error).__name__}: "
            f"{first_line(error)}); check the network connection, log in with `hf auth login` (or pass token=) "
            "and check that you may write to that repository"
        ) from None
