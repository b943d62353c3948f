"""Alerts, tasks and digests inside Bitrix24 (issue 16).

- ``rules``: the validated rules file ``config/alerts.yaml`` (pydantic; off the HTTP path) and its documented default;
- ``ledger``: the DynamoDB ledger keyed by (rule, object, period) that sends each alert once and keeps cooldowns;
- ``delivery``: Bitrix24 notifications, chat messages and tasks (paced with the writer), Telegram and SES;
- ``checks``: the schedule-based rules, computed by the report's own builder over the CRM snapshot and spend;
- ``digests``: the daily, weekly and monthly digests;
- ``realtime``: the hook the writer calls after it created a lead or saw a deal change (kept free of pydantic).
"""
