"""What the writes queue sends must be a body SQS accepts: it refuses U+FFFE and U+FFFF anywhere in a message, and
a form's raw copy (the body as received, in the message since capture stopped writing it to S3) may hold them."""

from __future__ import annotations

import json
import re

from throughline.adapters.writes_queue import message_body

# The characters SQS accepts in a message body (SendMessage: "#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD |
# #x10000 to #x10FFFF").
SQS_TEXT = re.compile("[\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")


def test_a_message_with_every_awkward_character_is_sqs_text_and_reads_back_the_same():
    awkward = "".join(chr(code) for code in range(0x20)) + '\ufffe\uffff\ufffd\u2028 Иван 😀 \\ " \x7f'
    message = {"type": "form_submission", "submission": {"comment": awkward}, "raw_copy": json.dumps({"body": awkward})}
    body = message_body(message)
    assert SQS_TEXT.fullmatch(body)
    assert json.loads(body) == message
    assert "Иван 😀" in body  # UTF-8 as it is: escaping everything would triple a Cyrillic post's size


def test_an_ordinary_message_is_plain_json():
    message = {"type": "form_submission", "submission": {"name": "Анна"}}
    assert message_body(message) == json.dumps(message, ensure_ascii=False)
