"""Other formats for a model directory: ONNX (:mod:`.onnx`, checked against PyTorch) and the
authors' official checkpoints (:mod:`.convert`, read without unpickling). Hands the hub the
ONNX file and its metadata; the model directory format itself is :mod:`draem_zoo.model.modeldir`."""
