"""The job each system does for a user, one home per system: the ``tatlas`` commands and the demos
call these, and so can any Python program.

- :mod:`.clip`: zero-shot classification of image files, embeddings of images and texts;
- :mod:`.whisper`: transcription of audio files of any length, subtitles, the named real weights;
- :mod:`.llm`: text generation and chat from a model folder (and images, for image-text models);
- :mod:`.imagegpt`: image completion;
- :mod:`.decision_transformer`: offline data collection, training, return-conditioned evaluation.

Above ``train`` and ``generate`` (a job may train or decode), below ``demo`` and ``cli``.
"""
