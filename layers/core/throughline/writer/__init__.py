"""The only writer to Bitrix24: queued form submissions become leads and journey lines, at the portal's pace."""
