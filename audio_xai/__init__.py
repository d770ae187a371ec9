"""The command line (``audio_xai.cli``, run as ``python main.py`` or ``audio-xai``) and the lowest layer every package
imports: the user's-mistake exception (``audio_xai.errors``) and safe file writes and downloads (``audio_xai.files``).
They live in a package of the project's own name so that installing it puts no ``main``, ``errors`` or ``files`` at the
top of site-packages, where a user's module of the same name would clash."""
