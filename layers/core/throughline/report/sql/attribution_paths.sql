-- attribution_paths: the attribution path table of one journey export and one period, as the nightly report builds
-- it (throughline.attribution.paths.build_paths over report.attribution's touches and conversions): one row per
-- distinct path (channels joined by ' > '), with total_conversions, total_conversion_value and total_null, the table
-- `python -m throughline attribute PATHS.csv` reads. A query, not a view: {{snapshot}} (journeys/latest.json),
-- {{date_from}} and {{date_to}} are filled in by `python -m throughline athena-paths` (the views must exist).
-- - touches: the export's marketing touches (site visits, forms, repeat requests, a CRM record's first touch), never
--   the sales process (channel crm, calls, letters, stage moves); a record typed in the CRM (crm_lead, crm_deal of a
--   deal without a lead) takes its report row's channel (roi_records), as in the report's table;
-- - conversions: the period's won deals whose amount is money (roi_deals.priced), with their revenue in {{currency}},
--   each at its `won` touch, else at the end of its win day (CLOSEDATE, else the stage history) in {{timezone}}; its
--   person from the export's entity lines (the deal's, else the lead's), else none: the path "(no touches)";
-- - a conversion's path is its person's touches after their previous conversion up to it (same instant: before);
--   touches after a person's last conversion form one journey without a conversion (total_null).
WITH
lines AS (
  SELECT *, CAST(replace(replace("at", 'T', ' '), 'Z', '+00:00') AS timestamp with time zone) AS moment
  FROM journeys
  WHERE snapshot = '{{snapshot}}' AND touch_id IS NOT NULL
),
touches AS (
  SELECT l.touch_id, l.person_key AS person, coalesce(r.channel, l.channel) AS channel, l.moment
  FROM lines AS l
  LEFT JOIN roi_records AS r
    ON l.kind IN ('crm_lead', 'crm_deal') AND r.entity_type = l.entity_type AND r.entity_id = l.entity_id
    AND (r.entity_type = 'lead' OR r.typed)
  WHERE coalesce(l.person_key, '') <> '' AND coalesce(l.channel, '') NOT IN ('', 'crm')
    AND l.kind IN ('first_visit', 'form', 'repeat_request', 'crm_lead', 'crm_deal')
),
won_touches AS (
  SELECT entity_id AS deal_id, max(moment) AS moment
  FROM lines
  WHERE entity_type = 'deal' AND kind = 'won'
  GROUP BY entity_id
),
entities AS (
  SELECT entity_type, entity_id, max(person_key) AS person_key, max(lead_id) AS lead_id
  FROM journeys
  WHERE snapshot = '{{snapshot}}' AND touch_id IS NULL
  GROUP BY entity_type, entity_id
),
conversions AS (
  SELECT
    coalesce(nullif(deal.person_key, ''), nullif(lead.person_key, ''), 'deal#' || CAST(w.deal_id AS varchar))
      AS person,
    coalesce(
      t.moment,
      CAST(CAST(CAST(w.closed + INTERVAL '1' DAY AS date) AS varchar) || ' 00:00:00 {{timezone}}'
        AS timestamp with time zone) - INTERVAL '0.001' SECOND
    ) AS moment,
    w.money AS revenue
  FROM roi_deals AS w
  LEFT JOIN entities AS deal ON deal.entity_type = 'deal' AND deal.entity_id = w.deal_id
  LEFT JOIN entities AS lead
    ON lead.entity_type = 'lead' AND lead.entity_id = coalesce(nullif(deal.lead_id, 0), nullif(w.lead_id, 0))
  LEFT JOIN won_touches AS t ON t.deal_id = w.deal_id
  WHERE w.won AND w.priced AND w.money IS NOT NULL AND w.closed BETWEEN DATE '{{date_from}}' AND DATE '{{date_to}}'
),
instants AS (
  SELECT person, moment, count(*) AS conversions, sum(revenue) AS revenue
  FROM conversions
  GROUP BY person, moment
),
assigned AS (
  SELECT t.touch_id, t.person, t.channel, t.moment, min(c.moment) AS converted
  FROM touches AS t
  LEFT JOIN instants AS c ON c.person = t.person AND t.moment <= c.moment
  GROUP BY t.touch_id, t.person, t.channel, t.moment
),
journeys_cut AS (
  SELECT person, converted, concat_ws(' > ', array_agg(channel ORDER BY moment, channel)) AS path
  FROM assigned
  GROUP BY person, converted
),
path_rows AS (
  SELECT coalesce(j.path, '(no touches)') AS path, c.conversions, c.revenue, 0 AS null_journeys
  FROM instants AS c
  LEFT JOIN journeys_cut AS j ON j.person = c.person AND j.converted = c.moment
  UNION ALL
  SELECT path, 0, CAST(0 AS decimal(38, 2)), 1 FROM journeys_cut WHERE converted IS NULL
)
SELECT
  path,
  CAST(sum(conversions) AS bigint) AS total_conversions,
  CAST(sum(revenue) AS decimal(38, 2)) AS total_conversion_value,
  CAST(sum(null_journeys) AS bigint) AS total_null
FROM path_rows
GROUP BY path
ORDER BY path
