"""``python main.py fit|validate|test|report|dashboard ...``: the command line, ``audio_xai.cli`` (installed as
``audio-xai``)."""
from audio_xai.cli import main

if __name__ == "__main__":
    main()
