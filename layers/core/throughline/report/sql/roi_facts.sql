-- roi_rates: the rate of every currency into {{currency}} in each rates file (1 unit = rate × base there, the base
-- itself 1): rates/date=<d>/rates.json as the spend import writes them.
CREATE OR REPLACE VIEW roi_rates AS
WITH rate_points AS (
  SELECT r."date" AS rate_day, upper(k.code) AS code, try_cast(r.rates[k.code] AS decimal(38, 10)) AS rate
  FROM spend_rates AS r
  CROSS JOIN UNNEST(map_keys(r.rates)) AS k (code)
  WHERE upper(k.code) <> upper(coalesce(r.base, ''))
  UNION ALL
  SELECT "date", upper(base), CAST(1 AS decimal(38, 10)) FROM spend_rates WHERE coalesce(base, '') <> ''
)
SELECT c.rate_day, c.code,
  CAST(CAST(c.rate AS double) / CAST(report.rate AS double) AS decimal(38, 10)) AS rate
FROM rate_points AS c
JOIN rate_points AS report ON report.rate_day = c.rate_day AND report.code = '{{currency}}'
WHERE c.rate > 0 AND report.rate > 0;

-- roi_deals: every deal with its report-zone days and, when won, its revenue in {{currency}} (money: NULL when the
-- amount is no money or its currency has no rate) and whether it is its customer's first win.
CREATE OR REPLACE VIEW roi_deals AS
WITH
deals AS (
  SELECT
    CAST(id AS bigint) AS deal_id,
    try_cast(nullif(lead_id, '') AS bigint) AS lead_id,
    coalesce(utm_source, '') AS utm_source,
    coalesce(utm_medium, '') AS utm_medium,
    coalesce(utm_campaign, '') AS utm_campaign,
    coalesce(source_id, '') AS source_id,
    CASE
      WHEN length(date_create) >= 25 AND substr(date_create, 20, 1) IN ('+', '-') THEN CAST(
        try_cast(replace(substr(date_create, 1, 25), 'T', ' ') AS timestamp with time zone)
        AT TIME ZONE '{{timezone}}' AS date)
      ELSE try_cast(substr(date_create, 1, 10) AS date)
    END AS created,
    coalesce(stage_semantic_id, '') = 'S' AS won,
    CASE
      WHEN coalesce(closedate, '') <> '' THEN try_cast(substr(closedate, 1, 10) AS date)
      WHEN length(date_modify) >= 25 AND substr(date_modify, 20, 1) IN ('+', '-') THEN CAST(
        try_cast(replace(substr(date_modify, 1, 25), 'T', ' ') AS timestamp with time zone)
        AT TIME ZONE '{{timezone}}' AS date)
      ELSE try_cast(substr(date_modify, 1, 10) AS date)
    END AS closed,
    CASE
      WHEN coalesce(trim(opportunity), '') = '' THEN CAST(0 AS decimal(38, 10))
      ELSE try_cast(trim(opportunity) AS decimal(38, 10))
    END AS amount,
    upper(coalesce(nullif(currency_id, ''), '{{currency}}')) AS currency,
    CASE WHEN coalesce(contact_id, '') NOT IN ('', '0') THEN 'c' || contact_id ELSE 'd' || id END AS customer
  FROM crm_deals
),
needed AS (
  SELECT DISTINCT currency AS code, closed AS day FROM deals
  WHERE won AND currency <> '{{currency}}' AND amount <> 0 AND closed IS NOT NULL
),
day_rates AS (
  SELECT code, day, rate FROM (
    SELECT n.code, n.day, f.rate,
      row_number() OVER (
        PARTITION BY n.code, n.day
        ORDER BY CASE WHEN f.rate_day <= n.day THEN 0 ELSE 1 END,
                 abs(date_diff('day', f.rate_day, n.day))
      ) AS pick
    FROM needed AS n JOIN roi_rates AS f ON f.code = n.code
  ) AS ranked
  WHERE pick = 1
),
first_won AS (
  SELECT deal_id, row_number() OVER (PARTITION BY customer ORDER BY closed, deal_id) = 1 AS is_first
  FROM deals WHERE won AND closed IS NOT NULL
)
SELECT d.*, coalesce(f.is_first, false) AS first_won,
  CASE
    WHEN NOT d.won OR d.closed IS NULL OR d.amount IS NULL OR abs(d.amount) >= 10000000000000000 THEN NULL
    WHEN d.currency = '{{currency}}' OR d.amount = 0 THEN round(d.amount, 2)
    ELSE round(d.amount * r.rate, 2)
  END AS money
FROM deals AS d
LEFT JOIN first_won AS f ON f.deal_id = d.deal_id
LEFT JOIN day_rates AS r ON r.code = d.currency AND r.day = d.closed;

-- roi_facts: the report's rows (a spend campaign, or the tags of CRM records no spend matched) by day, counted as
-- throughline.report.build counts them (its module docstring has the rules):
-- - spend: each spend row converted to {{currency}} with the rate of its day (the latest rates file on or before it,
--   else the earliest after it) and rounded to kopecks; a row without a rate is left out, as in the report;
-- - leads: by the day of DATE_CREATE in {{timezone}}; deals: by the day of their DATE_CREATE;
-- - won deals and revenue: STAGE_SEMANTIC_ID = 'S', dated by CLOSEDATE (empty: DATE_MODIFY's day in the zone);
--   an OPPORTUNITY that is no amount is left out; a new customer is the first won deal of a contact (or deal);
-- - a record belongs to the row of its lead (the lead's tags), else its own tags, else its SOURCE_ID; a tag
--   utm_campaign meets a spend campaign of its source by campaign id first, then by any name the campaign had.
-- Written for both Trino (Athena engine v3) and DuckDB: no engine-only functions.
CREATE OR REPLACE VIEW roi_facts AS
WITH
leads AS (
  SELECT
    CAST(id AS bigint) AS lead_id,
    coalesce(utm_source, '') AS utm_source,
    coalesce(utm_medium, '') AS utm_medium,
    coalesce(utm_campaign, '') AS utm_campaign,
    coalesce(source_id, '') AS source_id,
    CASE
      WHEN length(date_create) >= 25 AND substr(date_create, 20, 1) IN ('+', '-') THEN CAST(
        try_cast(replace(substr(date_create, 1, 25), 'T', ' ') AS timestamp with time zone)
        AT TIME ZONE '{{timezone}}' AS date)
      ELSE try_cast(substr(date_create, 1, 10) AS date)
    END AS day
  FROM crm_leads
),
deals AS (SELECT * FROM roi_deals),
spend_rows AS (
  SELECT
    platform,
    "date" AS day,
    coalesce(campaign_id, '') AS campaign_id,
    coalesce(campaign_name, '') AS campaign_name,
    coalesce(utm_source, '') AS utm_source,
    coalesce(utm_medium, '') AS utm_medium,
    coalesce(utm_campaign, '') AS utm_campaign,
    coalesce(impressions, 0) AS impressions,
    coalesce(clicks, 0) AS clicks,
    CAST(coalesce(cost, 0) AS decimal(38, 10)) AS cost,
    upper(coalesce(nullif(currency, ''), '{{currency}}')) AS currency
  FROM spend
),
needed AS (
  SELECT DISTINCT currency AS code, day FROM spend_rows WHERE currency <> '{{currency}}' AND cost <> 0
),
day_rates AS (
  SELECT code, day, rate FROM (
    SELECT n.code, n.day, f.rate,
      row_number() OVER (
        PARTITION BY n.code, n.day
        ORDER BY CASE WHEN f.rate_day <= n.day THEN 0 ELSE 1 END,
                 abs(date_diff('day', f.rate_day, n.day))
      ) AS pick
    FROM needed AS n JOIN roi_rates AS f ON f.code = n.code
  ) AS ranked
  WHERE pick = 1
),
spend_money AS (
  SELECT s.*,
    CASE
      WHEN s.currency = '{{currency}}' OR s.cost = 0 THEN round(s.cost, 2)
      ELSE round(s.cost * r.rate, 2)
    END AS money
  FROM spend_rows AS s
  LEFT JOIN day_rates AS r ON r.code = s.currency AND r.day = s.day
),
-- Tags → (channel, source), as throughline.sources.classify reads utm_source and utm_medium.
tag_pairs AS (
  SELECT DISTINCT utm_source, utm_medium FROM leads
  UNION SELECT DISTINCT utm_source, utm_medium FROM deals
  UNION SELECT DISTINCT utm_source, utm_medium FROM spend_rows
),
tag_text AS (
  SELECT utm_source, utm_medium,
    replace(replace(replace(replace(lower(trim(utm_source)), '  ', ' '), '  ', ' '), '  ', ' '), '  ', ' ')
      AS source_text,
    replace(lower(trim(utm_medium)), ' ', '_') AS medium
  FROM tag_pairs
),
host_sources AS (
  SELECT t.source_text, min_by(h.source, h.rule_order) AS source
  FROM (SELECT DISTINCT source_text FROM tag_text) AS t
  JOIN tl_host_rule AS h
    ON strpos(t.source_text, '.') > 0 AND strpos(t.source_text, ' ') = 0
    AND coalesce(regexp_extract(t.source_text, h.pattern), '') <> ''
  GROUP BY t.source_text
),
tag_source AS (
  SELECT t.utm_source, t.utm_medium, t.source_text, t.medium,
    CASE
      WHEN t.source_text = '' THEN '(not set)'
      WHEN a.source IS NOT NULL THEN a.source
      WHEN h.source IS NOT NULL THEN h.source
      ELSE t.source_text
    END AS canonical
  FROM tag_text AS t
  LEFT JOIN tl_source_alias AS a
    ON a.alias_key = replace(replace(replace(replace(t.source_text, ' ', ''), '.', ''), '_', ''), '-', '')
  LEFT JOIN host_sources AS h ON h.source_text = t.source_text
),
tag_origin AS (
  SELECT s.utm_source, s.utm_medium, s.canonical,
    CASE
      WHEN s.source_text = '' AND s.medium = '' THEN 'direct'
      WHEN f.family = 'direct' AND s.canonical IN ('(direct)', '(not set)', 'direct') THEN 'direct'
      WHEN f.family = 'display' THEN CASE WHEN k.kind = 'social' THEN 'social' ELSE 'display' END
      WHEN f.family = 'paid_social' THEN 'social'
      WHEN f.family = 'paid' OR s.medium LIKE 'paid%' THEN
        CASE
          WHEN k.kind IN ('social', 'messenger') THEN k.kind
          WHEN k.kind = 'search' OR strpos(s.medium, 'search') > 0 THEN 'paid_search'
          ELSE 'display'
        END
      WHEN f.family IN ('organic', 'referral') AND k.kind IN ('social', 'messenger') THEN k.kind
      WHEN f.family = 'organic' THEN 'organic_search'
      WHEN f.family IN ('email', 'messenger', 'social', 'referral', 'offline') THEN f.family
      WHEN k.kind = 'search' THEN 'organic_search'
      WHEN k.kind IN ('social', 'messenger') THEN k.kind
      WHEN s.canonical = 'email' THEN 'email'
      ELSE 'referral'
    END AS channel,
    CASE
      WHEN s.source_text = '' AND s.medium = '' THEN '(direct)'
      WHEN f.family = 'direct' AND s.canonical IN ('(direct)', '(not set)', 'direct') THEN '(direct)'
      ELSE s.canonical
    END AS source
  FROM tag_source AS s
  LEFT JOIN tl_medium_family AS f ON f.medium = s.medium
  LEFT JOIN tl_source_kind AS k ON k.source = s.canonical
),
-- Spend campaigns: platform × source × campaign id (or name); manual spend by its own tags.
spend_keyed AS (
  SELECT m.*,
    coalesce(p.source, o.canonical) AS source,
    CASE
      WHEN p.channel IS NOT NULL THEN p.channel
      WHEN m.utm_source = '' AND m.utm_medium = '' THEN 'offline'
      ELSE o.channel
    END AS channel,
    CASE WHEN m.platform = 'manual' THEN coalesce(nullif(m.utm_campaign, ''), m.campaign_name)
         ELSE m.campaign_name END AS name,
    CASE WHEN m.platform = 'manual' THEN lower(trim(coalesce(nullif(m.utm_campaign, ''), m.campaign_name)))
         ELSE coalesce(nullif(m.campaign_id, ''), lower(trim(m.campaign_name))) END AS campaign_key
  FROM spend_money AS m
  LEFT JOIN tl_platform AS p ON p.platform = m.platform
  LEFT JOIN tag_origin AS o ON o.utm_source = m.utm_source AND o.utm_medium = m.utm_medium
),
spend_campaigns AS (
  SELECT platform, source, campaign_key, min(channel) AS channel,
    CASE
      WHEN platform = 'manual' THEN coalesce(nullif(min(name), ''), '(не указана)')
      ELSE coalesce(max_by(nullif(name, ''), CASE WHEN name <> '' THEN day END), nullif(min(campaign_id), ''),
                    '(не указана)')
    END AS campaign,
    CASE WHEN platform = 'manual' THEN NULL ELSE nullif(min(campaign_id), '') END AS campaign_id
  FROM spend_keyed
  GROUP BY platform, source, campaign_key
),
spend_tags AS (
  SELECT DISTINCT source, lower(trim(campaign_id)) AS tag, 0 AS by_name, platform, campaign_key
  FROM spend_keyed WHERE platform <> 'manual' AND campaign_id <> ''
  UNION
  SELECT DISTINCT source, lower(trim(name)), 1, platform, campaign_key FROM spend_keyed WHERE name <> ''
),
spend_match AS (
  SELECT source, tag, platform, campaign_key FROM (
    SELECT source, tag, platform, campaign_key,
      row_number() OVER (PARTITION BY source, tag ORDER BY by_name, platform, campaign_key) AS pick
    FROM spend_tags
  ) AS ranked
  WHERE pick = 1
),
-- What each distinct combination of a record's tags means: its report row.
slots AS (
  SELECT DISTINCT utm_source, utm_medium, utm_campaign, source_id FROM leads
  UNION SELECT DISTINCT utm_source, utm_medium, utm_campaign, source_id FROM deals
),
slot_origin AS (
  SELECT s.*,
    CASE WHEN s.utm_source <> '' OR s.utm_medium <> '' THEN o.channel ELSE coalesce(c.channel, 'unknown') END
      AS channel,
    CASE
      WHEN s.utm_source <> '' OR s.utm_medium <> '' THEN o.source
      WHEN c.source IS NOT NULL THEN c.source
      WHEN s.source_id NOT IN ('', 'OTHER') THEN s.source_id
      ELSE '(not set)'
    END AS source
  FROM slots AS s
  LEFT JOIN tag_origin AS o ON o.utm_source = s.utm_source AND o.utm_medium = s.utm_medium
  LEFT JOIN tl_crm_source AS c ON c.source_id = s.source_id
),
slot_rows AS (
  SELECT s.utm_source, s.utm_medium, s.utm_campaign, s.source_id,
    CASE WHEN m.platform IS NULL THEN 'tags' ELSE 'spend' END AS kind,
    coalesce(m.platform, '') AS platform,
    coalesce(c.channel, s.channel) AS channel,
    s.source,
    coalesce(m.campaign_key, lower(trim(s.utm_campaign))) AS campaign_key,
    coalesce(c.campaign, nullif(trim(s.utm_campaign), ''), '(не указана)') AS campaign,
    c.campaign_id
  FROM slot_origin AS s
  LEFT JOIN spend_match AS m
    ON s.utm_campaign <> '' AND m.source = s.source AND m.tag = lower(trim(s.utm_campaign))
  LEFT JOIN spend_campaigns AS c
    ON c.platform = m.platform AND c.source = m.source AND c.campaign_key = m.campaign_key
),
lead_rows AS (
  SELECT l.lead_id, l.day, r.kind, r.platform, r.channel, r.source, r.campaign_key, r.campaign, r.campaign_id
  FROM leads AS l
  JOIN slot_rows AS r
    ON r.utm_source = l.utm_source AND r.utm_medium = l.utm_medium AND r.utm_campaign = l.utm_campaign
    AND r.source_id = l.source_id
),
deal_rows AS (
  SELECT d.*,
    coalesce(l.kind, r.kind) AS kind,
    coalesce(l.platform, r.platform) AS platform,
    coalesce(l.channel, r.channel) AS channel,
    coalesce(l.source, r.source) AS source,
    coalesce(l.campaign_key, r.campaign_key) AS campaign_key,
    coalesce(l.campaign, r.campaign) AS campaign,
    CASE WHEN l.lead_id IS NULL THEN r.campaign_id ELSE l.campaign_id END AS campaign_id,
    CASE WHEN l.lead_id IS NULL THEN d.created ELSE l.day END AS started
  FROM deals AS d
  LEFT JOIN lead_rows AS l ON l.lead_id = d.lead_id AND d.lead_id > 0
  JOIN slot_rows AS r
    ON r.utm_source = d.utm_source AND r.utm_medium = d.utm_medium AND r.utm_campaign = d.utm_campaign
    AND r.source_id = d.source_id
),
facts AS (
  SELECT s.platform, 'spend' AS kind, s.channel, s.source, s.campaign_key, c.campaign, c.campaign_id, s.day,
    s.money AS spend, s.impressions, s.clicks, 0 AS leads, 0 AS leads_with_deal, 0 AS deals, 0 AS won_deals,
    CAST(0 AS decimal(38, 2)) AS revenue, 0 AS new_customers, 0 AS cycle_days, 0 AS cycle_deals
  FROM spend_keyed AS s
  JOIN spend_campaigns AS c
    ON c.platform = s.platform AND c.source = s.source AND c.campaign_key = s.campaign_key
  WHERE s.money IS NOT NULL
  UNION ALL
  SELECT l.platform, l.kind, l.channel, l.source, l.campaign_key, l.campaign, l.campaign_id, l.day,
    CAST(0 AS decimal(38, 2)), 0, 0, 1, CASE WHEN converted.lead_id IS NULL THEN 0 ELSE 1 END,
    0, 0, CAST(0 AS decimal(38, 2)), 0, 0, 0
  FROM lead_rows AS l
  LEFT JOIN (SELECT DISTINCT lead_id FROM deals WHERE lead_id > 0) AS converted ON converted.lead_id = l.lead_id
  WHERE l.day IS NOT NULL
  UNION ALL
  SELECT platform, kind, channel, source, campaign_key, campaign, campaign_id, created,
    CAST(0 AS decimal(38, 2)), 0, 0, 0, 0, 1, 0, CAST(0 AS decimal(38, 2)), 0, 0, 0
  FROM deal_rows
  WHERE created IS NOT NULL
  UNION ALL
  SELECT platform, kind, channel, source, campaign_key, campaign, campaign_id, closed,
    CAST(0 AS decimal(38, 2)), 0, 0, 0, 0, 0, 1, money, CASE WHEN first_won THEN 1 ELSE 0 END,
    CASE WHEN started IS NULL THEN 0 ELSE greatest(date_diff('day', started, closed), 0) END,
    CASE WHEN started IS NULL THEN 0 ELSE 1 END
  FROM deal_rows
  WHERE won AND money IS NOT NULL
)
SELECT
  kind, platform, channel, source, campaign_key,
  max(campaign) AS campaign,
  max(campaign_id) AS campaign_id,
  day,
  CAST(sum(spend) AS decimal(38, 2)) AS spend,
  CAST(sum(impressions) AS bigint) AS impressions,
  CAST(sum(clicks) AS bigint) AS clicks,
  CAST(sum(leads) AS bigint) AS leads,
  CAST(sum(leads_with_deal) AS bigint) AS leads_with_deal,
  CAST(sum(deals) AS bigint) AS deals,
  CAST(sum(won_deals) AS bigint) AS won_deals,
  CAST(sum(revenue) AS decimal(38, 2)) AS revenue,
  CAST(sum(new_customers) AS bigint) AS new_customers,
  CAST(sum(cycle_days) AS bigint) AS cycle_days,
  CAST(sum(cycle_deals) AS bigint) AS cycle_deals
FROM facts
GROUP BY kind, platform, channel, source, campaign_key, day;
