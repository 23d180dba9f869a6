"""ImageBind: six modalities in one embedding space (:mod:`.model`), the official checkpoint
converter (:mod:`.convert`), preprocessing equal to the official pipeline (:mod:`.preprocess`) and
image-anchored training on the embedded world (:mod:`.task`)."""
