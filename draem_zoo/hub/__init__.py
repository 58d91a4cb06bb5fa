"""The model zoo on the Hugging Face Hub (the only package importing huggingface_hub).

Takes a search's exported model directories and hands users one repository per category:

* :mod:`.cards`: model cards rendered from ``cards/model_card.md.j2``;
* :mod:`.publish`: one repository per category, one commit, a tag per release, a zoo index;
* :mod:`.download`: ``from_pretrained`` and ``pull`` (the Hub cache, offline, pinned revisions);
* :mod:`.index`: every name in a downloaded zoo index checked before ``pull`` writes anything;
* :mod:`.cache`: whether a Hub-cache copy loading refused is damaged, or the repository is at fault.

(Pretrained timm encoder weights are fetched by timm itself, through its own Hub entries.)
"""
