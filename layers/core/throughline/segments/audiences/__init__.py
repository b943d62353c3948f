"""Ad audiences: the customers of chosen segments, sent to ad platforms as hashed customer lists.

``members.py`` holds what every platform adapter takes (``Member``) and gives back (``AudienceSync``); each
platform's adapter (``yandex.py``, ``vk.py``, ``google.py``) normalizes and hashes exactly as that platform documents.
"""
