"""OpenAI `audio.speech` -> NVIDIA Riva `text_to_audio`, served by an in-process adapter.

Pure pieces (request parsing, voices, SSML and speed planning, chunking, audio decode /
stretch / encode) are plain functions over bytes and dataclasses; `adapter` is the only
module with I/O.
"""

