"""Turn form submissions into Bitrix24 leads: one lead per person, repeat requests as journey lines.

Each submission is first *prepared* on its own (``fields``: touches, lines, fields, comment): one that cannot be
planned or formatted fails there, alone, and never shares a request with anyone. The rest are written in rounds of a
few ``batch`` calls, whatever the number of submissions (``writer.LeadWriter``; ``rounds`` picks each round):

1. look up (``lookup``, reads): leads already created for these submissions (``ORIGIN_ID``), and each person by phone
   and e-mail (``crm.duplicate.findbycomm``);
2. read the open leads found (``records``: status, journey field, contacts) — only when someone was found;
3. write (``write``): ``crm.lead.add`` for new people, ``crm.lead.update`` for repeat requests; then, only for lines
   that are in, the manager's timeline comment (``comments``).

A round holds short DynamoDB leases on each person's contacts (and the lead it changes), so two writer instances
never write one person at once (``rounds.RoundLeases``, ``adapters.locks``). Reads are repeated freely; a write whose
outcome is unknown (a timeout, a lost answer) is never repeated in the invocation: the message returns to the queue
once the portal has surely finished, and the ``ORIGIN_ID`` look-up (or, for a repeat line, the count of equal lines
noted before the write) then tells what happened.

Simple CRM mode (``crm.settings.mode.get`` = 2: no leads) writes deals and contacts instead: a person is found by
contact, a repeat request goes to their open deal, a new person gets a contact and a deal.
"""

from throughline.writer.leads.fields import CLIENT_ID_FIELDS, DEFAULT_SOURCE_IDS, LeadRules
from throughline.writer.leads.lookup import MODE_MAX_AGE_SECONDS, read_crm_mode
from throughline.writer.leads.model import (
    CLASSIC,
    DEAL_ENTITY,
    LEAD_ENTITY,
    ORIGINATOR_ID,
    SIMPLE,
    InDoubt,
    Outcome,
    PortalState,
    Unwritable,
)
from throughline.writer.leads.rounds import (
    BATCH_SECONDS_BUDGET,
    INITIAL_SECONDS_PER_WRITE,
    MAX_FINDBYCOMM_PER_ROUND,
    PORTAL_REQUEST_LIMIT_SECONDS,
)
from throughline.writer.leads.write import count_line
from throughline.writer.leads.writer import LeadWriter

__all__ = [
    "BATCH_SECONDS_BUDGET",
    "CLASSIC",
    "CLIENT_ID_FIELDS",
    "DEAL_ENTITY",
    "DEFAULT_SOURCE_IDS",
    "INITIAL_SECONDS_PER_WRITE",
    "LEAD_ENTITY",
    "MAX_FINDBYCOMM_PER_ROUND",
    "MODE_MAX_AGE_SECONDS",
    "ORIGINATOR_ID",
    "PORTAL_REQUEST_LIMIT_SECONDS",
    "SIMPLE",
    "InDoubt",
    "LeadRules",
    "LeadWriter",
    "Outcome",
    "PortalState",
    "Unwritable",
    "count_line",
    "read_crm_mode",
]
