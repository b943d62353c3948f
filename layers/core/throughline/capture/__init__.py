"""Web-form capture: a site's post becomes a validated, durable submission (raw copy in S3, message in SQS).

``forms`` decodes and validates, ``submissions`` is the message that travels to the writer, ``receive`` makes it
durable. This package is on the HTTP path: keep its imports narrow.
"""
