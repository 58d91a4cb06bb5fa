"""Everything that talks to the Hugging Face Hub (the only package importing huggingface_hub).

* :mod:`.timm_weights`: pretrained timm encoder weights (cache first, fast failure offline);
* :mod:`.cards`: model cards rendered from ``cards/model_card.md.j2``;
* :mod:`.publish`: one repository per category, one commit, a tag per release, a zoo index;
* :mod:`.download`: ``from_pretrained`` and ``pull`` (the Hub cache, offline, pinned revisions).
"""
