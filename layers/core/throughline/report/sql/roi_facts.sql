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

-- roi_deals: every deal with its report-zone days and, when won, its revenue in {{currency}}: money is 0 for an
-- amount that is no money (empty, negative, not a number; priced is false: out of the average check), NULL when its
-- currency has no rate; the day of a won deal without CLOSEDATE is its last move into a success stage in
-- crm_deal_stage_history (never DATE_MODIFY); a customer is the contact, else the company, else the deal.
CREATE OR REPLACE VIEW roi_deals AS
WITH
moves AS (
  SELECT owner_id,
    CASE
      WHEN length(created_time) >= 25 AND substr(created_time, 20, 1) IN ('+', '-') THEN
        try_cast(replace(substr(created_time, 1, 25), 'T', ' ') AS timestamp with time zone)
      ELSE try_cast(replace(substr(created_time, 1, 19), 'T', ' ') || ' {{timezone}}' AS timestamp with time zone)
    END AS moment
  FROM crm_deal_stage_history
  WHERE coalesce(stage_semantic_id, '') = 'S'
),
wins AS (
  SELECT owner_id AS deal_id, CAST(max(moment) AT TIME ZONE '{{timezone}}' AS date) AS day
  FROM moves
  WHERE moment IS NOT NULL
  GROUP BY owner_id
),
deals AS (
  SELECT
    CAST(id AS bigint) AS deal_id,
    try_cast(nullif(lead_id, '') AS bigint) AS lead_id,
    coalesce(utm_source, '') AS utm_source,
    coalesce(utm_medium, '') AS utm_medium,
    coalesce(utm_campaign, '') AS utm_campaign,
    coalesce(utm_content, '') AS utm_content,
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
      ELSE w.day
    END AS closed,
    try_cast(trim(coalesce(opportunity, '')) AS decimal(38, 10)) AS amount,
    upper(coalesce(nullif(currency_id, ''), '{{currency}}')) AS currency,
    CASE
      WHEN coalesce(contact_id, '') NOT IN ('', '0') THEN 'c' || contact_id
      WHEN coalesce(company_id, '') NOT IN ('', '0') THEN 'o' || company_id
      ELSE 'd' || id
    END AS customer
  FROM crm_deals
  LEFT JOIN wins AS w ON w.deal_id = try_cast(crm_deals.id AS bigint)
),
priced AS (
  SELECT *, coalesce(amount >= 0 AND amount < 10000000000000000, false) AS priced FROM deals
),
needed AS (
  SELECT DISTINCT currency AS code, closed AS day FROM priced
  WHERE won AND priced AND currency <> '{{currency}}' AND amount <> 0 AND closed IS NOT NULL
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
    WHEN NOT d.won OR d.closed IS NULL THEN NULL
    WHEN NOT d.priced THEN CAST(0 AS decimal(38, 2))
    WHEN d.currency = '{{currency}}' OR d.amount = 0 THEN round(d.amount, 2)
    ELSE round(d.amount * r.rate, 2)
  END AS money
FROM priced AS d
LEFT JOIN first_won AS f ON f.deal_id = d.deal_id
LEFT JOIN day_rates AS r ON r.code = d.currency AND r.day = d.closed;

-- roi_spend_rows: the spend rows on one VAT basis (net unless REPORT_SPEND_WITH_VAT: a row imported on the other
-- basis is converted with VAT_RATE) and in {{currency}} (money: NULL without a rate).
CREATE OR REPLACE VIEW roi_spend_rows AS
WITH
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
    CASE
      WHEN coalesce(include_vat, false) AND NOT {{spend_with_vat}} THEN
        CAST(CAST(coalesce(cost, 0) AS decimal(38, 10)) / {{vat_factor}} AS decimal(38, 10))
      WHEN NOT coalesce(include_vat, false) AND {{spend_with_vat}} THEN
        CAST(CAST(coalesce(cost, 0) AS decimal(38, 10)) * {{vat_factor}} AS decimal(38, 10))
      ELSE CAST(coalesce(cost, 0) AS decimal(38, 10))
    END AS cost,
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
)
SELECT s.*,
  CASE
    WHEN s.currency = '{{currency}}' OR s.cost = 0 THEN round(s.cost, 2)
    ELSE round(s.cost * r.rate, 2)
  END AS money
FROM spend_rows AS s
LEFT JOIN day_rates AS r ON r.code = s.currency AND r.day = s.day;

-- roi_spend_keyed: each spend row's source, channel and campaign key (platform × source × campaign id, else name;
-- manual spend by its utm_campaign, else its medium; spend without a rate apart, by currency: «нет курса»).
CREATE OR REPLACE VIEW roi_spend_keyed AS
WITH
spend_rows AS (SELECT * FROM roi_spend_rows),
-- Tags → (channel, source), as throughline.sources.classify reads utm_source and utm_medium.
tag_pairs AS (SELECT DISTINCT utm_source, utm_medium FROM spend_rows),
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
named AS (
  SELECT m.*,
    coalesce(p.source, o.canonical) AS source,
    CASE
      WHEN p.channel IS NOT NULL THEN p.channel
      WHEN m.utm_source = '' AND m.utm_medium = '' THEN 'offline'
      ELSE o.channel
    END AS channel,
    CASE WHEN m.platform = 'manual' THEN coalesce(nullif(m.utm_campaign, ''), m.campaign_name)
         ELSE m.campaign_name END AS name,
    m.money IS NULL AS no_rate
  FROM spend_rows AS m
  LEFT JOIN tl_platform AS p ON p.platform = m.platform
  LEFT JOIN tag_origin AS o ON o.utm_source = m.utm_source AND o.utm_medium = m.utm_medium
),
keyed AS (
  SELECT *, {{tag_key(name)}} AS name_key, {{tag_key(campaign_id)}} AS id_key, {{tag_key(utm_medium)}} AS medium_key
  FROM named
)
SELECT *,
  CASE
    WHEN platform <> 'manual' THEN coalesce(nullif(campaign_id, ''), name_key)
    WHEN name <> '' THEN name_key
    ELSE '|' || medium_key
  END || CASE WHEN no_rate THEN '|no_rate|' || currency ELSE '' END AS campaign_key
FROM keyed;

-- roi_spend_campaigns: one spend campaign's row: its latest name (a renamed campaign shows the name it has now).
CREATE OR REPLACE VIEW roi_spend_campaigns AS
SELECT platform, source, campaign_key, min(channel) AS channel,
  CASE
    WHEN platform = 'manual' THEN coalesce(nullif(min(name), ''), '(не указана)')
    ELSE coalesce(max_by(nullif(name, ''), CASE WHEN name <> '' THEN day END), nullif(min(campaign_id), ''),
                  '(не указана)')
  END AS campaign,
  CASE WHEN platform = 'manual' THEN NULL ELSE nullif(min(campaign_id), '') END AS campaign_id
FROM roi_spend_keyed
GROUP BY platform, source, campaign_key;

-- roi_shared_names: a campaign name (as tag_key compares it) that spend campaigns of two accounts or ids share, and
-- those campaigns: the records that meet it by name only get one row with all their spend (and what met either id).
CREATE OR REPLACE VIEW roi_shared_names AS
WITH
members AS (
  SELECT DISTINCT source, name_key, platform, campaign_key FROM roi_spend_keyed WHERE NOT no_rate AND name <> ''
),
shared AS (SELECT source, name_key FROM members GROUP BY source, name_key HAVING count(*) > 1)
SELECT m.source, m.name_key, m.platform, m.campaign_key, c.channel, coalesce(c.campaign_id, c.campaign) AS label
FROM members AS m
JOIN shared AS g ON g.source = m.source AND g.name_key = m.name_key
JOIN roi_spend_campaigns AS c ON c.platform = m.platform AND c.source = m.source AND c.campaign_key = m.campaign_key;

-- roi_shared_rows: the one row of a shared name: the first platform, the campaigns' channel and their ids.
CREATE OR REPLACE VIEW roi_shared_rows AS
SELECT source, name_key, 'shared|' || name_key AS campaign_key, min(platform) AS platform, min(channel) AS channel,
  concat_ws(', ', array_agg(label ORDER BY label)) AS campaign_id
FROM roi_shared_names
GROUP BY source, name_key;

-- roi_records: the report row of every lead and deal (a deal: its lead's row, else its own tags', else its
-- SOURCE_ID's), as throughline.report.build gives them (its module docstring has the rules):
-- - a record's tags mean (channel, source) as throughline.sources.classify reads them; without tags its SOURCE_ID
--   means one through BITRIX24_SOURCE_MAP (tl_crm_source), else "unknown";
-- - utm_campaign meets a spend campaign of its source by campaign id, else by any name the campaign had (names and
--   ids compared as report.channels.tag_key compares them: URL-decoded, + as a space, lower case, ё as е, runs of
--   whitespace as one space); a manual spend row without a campaign meets the records of its source and medium that
--   carry none; then a campaign id in utm_content; then the same for spend without an exchange rate («нет курса»);
--   else the record has a row of its own tags.
-- Written for both Trino (Athena engine v3) and DuckDB: no engine-only functions.
CREATE OR REPLACE VIEW roi_records AS
WITH
leads AS (
  SELECT
    CAST(id AS bigint) AS lead_id,
    coalesce(utm_source, '') AS utm_source,
    coalesce(utm_medium, '') AS utm_medium,
    coalesce(utm_campaign, '') AS utm_campaign,
    coalesce(utm_content, '') AS utm_content,
    coalesce(source_id, '') AS source_id,
    CASE
      WHEN length(date_create) >= 25 AND substr(date_create, 20, 1) IN ('+', '-') THEN CAST(
        try_cast(replace(substr(date_create, 1, 25), 'T', ' ') AS timestamp with time zone)
        AT TIME ZONE '{{timezone}}' AS date)
      ELSE try_cast(substr(date_create, 1, 10) AS date)
    END AS day
  FROM crm_leads
),
spend_rows AS (SELECT * FROM roi_spend_rows),
-- Tags → (channel, source), as throughline.sources.classify reads utm_source and utm_medium.
tag_pairs AS (
  SELECT DISTINCT utm_source, utm_medium FROM leads
  UNION SELECT DISTINCT utm_source, utm_medium FROM roi_deals
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
slots AS (
  SELECT DISTINCT utm_source, utm_medium, utm_campaign, utm_content, source_id FROM leads
  UNION SELECT DISTINCT utm_source, utm_medium, utm_campaign, utm_content, source_id FROM roi_deals
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
    END AS source,
    {{tag_key(s.utm_campaign)}} AS campaign_tag,
    {{tag_key(s.utm_content)}} AS content_tag,
    {{tag_key(s.utm_medium)}} AS medium_tag
  FROM slots AS s
  LEFT JOIN tag_origin AS o ON o.utm_source = s.utm_source AND o.utm_medium = s.utm_medium
  LEFT JOIN tl_crm_source AS c ON c.source_id = s.source_id
),
-- Ways a record meets a spend campaign, in the report's order: 1 id, 2 name, 3 a manual row's source and medium,
-- 4 an id in utm_content, 5 id and 6 name of spend without a rate.
spend_tags AS (
  SELECT DISTINCT source, id_key AS tag, CASE WHEN no_rate THEN 5 ELSE 1 END AS way, platform, campaign_key
  FROM roi_spend_keyed WHERE platform <> 'manual' AND campaign_id <> ''
  UNION
  SELECT DISTINCT k.source, k.name_key, CASE WHEN k.no_rate THEN 6 ELSE 2 END,
    CASE WHEN g.name_key IS NULL OR k.no_rate THEN k.platform ELSE '' END,
    CASE WHEN g.name_key IS NULL OR k.no_rate THEN k.campaign_key ELSE g.campaign_key END
  FROM roi_spend_keyed AS k
  LEFT JOIN roi_shared_rows AS g ON g.source = k.source AND g.name_key = k.name_key
  WHERE k.name <> ''
  UNION
  SELECT DISTINCT source, medium_key, 3, platform, campaign_key
  FROM roi_spend_keyed WHERE platform = 'manual' AND name = '' AND (utm_source <> '' OR utm_medium <> '')
),
candidates AS (
  SELECT s.utm_source, s.utm_medium, s.utm_campaign, s.utm_content, s.source_id, t.way, t.platform, t.campaign_key
  FROM slot_origin AS s
  JOIN spend_tags AS t ON t.source = s.source AND t.tag = s.campaign_tag AND t.way IN (1, 2, 5, 6)
  WHERE s.utm_campaign <> ''
  UNION ALL
  SELECT s.utm_source, s.utm_medium, s.utm_campaign, s.utm_content, s.source_id, t.way, t.platform, t.campaign_key
  FROM slot_origin AS s
  JOIN spend_tags AS t ON t.source = s.source AND t.tag = s.medium_tag AND t.way = 3
  WHERE s.utm_campaign = '' AND (s.utm_source <> '' OR s.utm_medium <> '')
  UNION ALL
  SELECT s.utm_source, s.utm_medium, s.utm_campaign, s.utm_content, s.source_id, 4, t.platform, t.campaign_key
  FROM slot_origin AS s
  JOIN spend_tags AS t ON t.source = s.source AND t.tag = s.content_tag AND t.way = 1
  WHERE s.utm_content <> ''
),
spend_match AS (
  SELECT utm_source, utm_medium, utm_campaign, utm_content, source_id, platform, campaign_key FROM (
    SELECT *, row_number() OVER (
      PARTITION BY utm_source, utm_medium, utm_campaign, utm_content, source_id
      ORDER BY way, platform, campaign_key
    ) AS pick
    FROM candidates
  ) AS ranked
  WHERE pick = 1
),
slot_rows AS (
  SELECT s.utm_source, s.utm_medium, s.utm_campaign, s.utm_content, s.source_id,
    CASE WHEN m.platform IS NULL THEN 'tags' WHEN m.platform = '' THEN 'shared' ELSE 'spend' END AS kind,
    coalesce(g.platform, m.platform, '') AS platform,
    coalesce(c.channel, g.channel, s.channel) AS channel,
    s.source,
    coalesce(m.campaign_key, s.campaign_tag) AS campaign_key,
    coalesce(c.campaign, nullif(trim(s.utm_campaign), ''), '(не указана)') AS campaign,
    coalesce(c.campaign_id, g.campaign_id) AS campaign_id
  FROM slot_origin AS s
  LEFT JOIN spend_match AS m
    ON m.utm_source = s.utm_source AND m.utm_medium = s.utm_medium AND m.utm_campaign = s.utm_campaign
    AND m.utm_content = s.utm_content AND m.source_id = s.source_id
  LEFT JOIN roi_spend_campaigns AS c
    ON c.platform = m.platform AND c.source = s.source AND c.campaign_key = m.campaign_key
  LEFT JOIN roi_shared_rows AS g ON m.platform = '' AND g.source = s.source AND g.campaign_key = m.campaign_key
),
lead_rows AS (
  SELECT l.lead_id, l.day, r.kind, r.platform, r.channel, r.source, r.campaign_key, r.campaign, r.campaign_id
  FROM leads AS l
  JOIN slot_rows AS r
    ON r.utm_source = l.utm_source AND r.utm_medium = l.utm_medium AND r.utm_campaign = l.utm_campaign
    AND r.utm_content = l.utm_content AND r.source_id = l.source_id
)
SELECT 'lead' AS entity_type, lead_id AS entity_id, CAST(NULL AS bigint) AS deal_lead, day AS started,
  kind, platform, channel, source, campaign_key, campaign, campaign_id, false AS typed
FROM lead_rows
UNION ALL
SELECT 'deal', d.deal_id, l.lead_id,
  CASE WHEN l.lead_id IS NULL THEN d.created ELSE l.day END,
  coalesce(l.kind, r.kind), coalesce(l.platform, r.platform), coalesce(l.channel, r.channel),
  coalesce(l.source, r.source), coalesce(l.campaign_key, r.campaign_key), coalesce(l.campaign, r.campaign),
  CASE WHEN l.lead_id IS NULL THEN r.campaign_id ELSE l.campaign_id END,
  l.lead_id IS NULL
FROM roi_deals AS d
LEFT JOIN lead_rows AS l ON l.lead_id = d.lead_id AND d.lead_id > 0
JOIN slot_rows AS r
  ON r.utm_source = d.utm_source AND r.utm_medium = d.utm_medium AND r.utm_campaign = d.utm_campaign
  AND r.utm_content = d.utm_content AND r.source_id = d.source_id;

-- roi_facts: the report's rows (a spend campaign, or the tags of CRM records no spend matched) by day, counted as
-- throughline.report.build counts them:
-- - spend: each spend row on one VAT basis (net unless REPORT_SPEND_WITH_VAT; a row imported on the other basis is
--   converted with VAT_RATE), converted to {{currency}} with the rate of its day (the latest rates file on or before
--   it, else the earliest after it) and rounded to kopecks; a row without a rate is a campaign row of its own
--   («нет курса»: unconverted_spend in unconverted_currency), out of spend and every ratio;
-- - leads: by the day of DATE_CREATE in {{timezone}}; deals: by the day of their DATE_CREATE;
-- - won deals and revenue (roi_deals): STAGE_SEMANTIC_ID = 'S', dated by CLOSEDATE, else by the stage history; an
--   amount that is no money is a won deal without revenue, out of the average check (priced_deals); a new customer
--   is the first won deal of a contact (else company, else deal).
CREATE OR REPLACE VIEW roi_facts AS
WITH
records AS (SELECT * FROM roi_records),
converted AS (SELECT DISTINCT lead_id FROM roi_deals WHERE lead_id > 0),
deal_rows AS (
  SELECT d.*, r.kind, r.platform, r.channel, r.source, r.campaign_key, r.campaign, r.campaign_id, r.started
  FROM roi_deals AS d
  JOIN records AS r ON r.entity_type = 'deal' AND r.entity_id = d.deal_id
),
facts AS (
  SELECT s.platform, 'spend' AS kind, s.channel, s.source, s.campaign_key, c.campaign, c.campaign_id, s.day,
    coalesce(s.money, 0) AS spend,
    CASE WHEN s.money IS NULL THEN 0 ELSE s.impressions END AS impressions,
    CASE WHEN s.money IS NULL THEN 0 ELSE s.clicks END AS clicks,
    0 AS leads, 0 AS leads_with_deal, 0 AS deals, 0 AS won_deals, 0 AS priced_deals,
    CAST(0 AS decimal(38, 2)) AS revenue, 0 AS new_customers, 0 AS cycle_days, 0 AS cycle_deals,
    CASE WHEN s.money IS NULL THEN s.cost ELSE 0 END AS unconverted_spend,
    CASE WHEN s.money IS NULL THEN s.currency END AS unconverted_currency
  FROM roi_spend_keyed AS s
  JOIN roi_spend_campaigns AS c
    ON c.platform = s.platform AND c.source = s.source AND c.campaign_key = s.campaign_key
  UNION ALL
  SELECT l.platform, l.kind, l.channel, l.source, l.campaign_key, l.campaign, l.campaign_id, l.started,
    CAST(0 AS decimal(38, 2)), 0, 0, 1, CASE WHEN converted.lead_id IS NULL THEN 0 ELSE 1 END,
    0, 0, 0, CAST(0 AS decimal(38, 2)), 0, 0, 0, 0, CAST(NULL AS varchar)
  FROM records AS l
  LEFT JOIN converted ON converted.lead_id = l.entity_id
  WHERE l.entity_type = 'lead' AND l.started IS NOT NULL
  UNION ALL
  SELECT platform, kind, channel, source, campaign_key, campaign, campaign_id, created,
    CAST(0 AS decimal(38, 2)), 0, 0, 0, 0, 1, 0, 0, CAST(0 AS decimal(38, 2)), 0, 0, 0, 0, CAST(NULL AS varchar)
  FROM deal_rows
  WHERE created IS NOT NULL
  UNION ALL
  SELECT platform, kind, channel, source, campaign_key, campaign, campaign_id, closed,
    CAST(0 AS decimal(38, 2)), 0, 0, 0, 0, 0, 1, CASE WHEN priced THEN 1 ELSE 0 END, money,
    CASE WHEN first_won THEN 1 ELSE 0 END,
    CASE WHEN started IS NULL THEN 0 ELSE greatest(date_diff('day', started, closed), 0) END,
    CASE WHEN started IS NULL THEN 0 ELSE 1 END,
    0, CAST(NULL AS varchar)
  FROM deal_rows
  WHERE won AND money IS NOT NULL
),
-- A shared name's row, in a month with records: its campaigns' spend and records move onto it.
shared_months AS (
  SELECT DISTINCT source, campaign_key, date_trunc('month', day) AS month FROM facts WHERE kind = 'shared'
),
member_of AS (
  SELECT n.platform, n.campaign_key, n.source, min(r.campaign_key) AS shared_key
  FROM roi_shared_names AS n
  JOIN roi_shared_rows AS r ON r.source = n.source AND r.name_key = n.name_key
  GROUP BY n.platform, n.campaign_key, n.source
),
merged AS (
  SELECT
    CASE WHEN h.month IS NULL THEN f.kind ELSE 'shared' END AS kind,
    CASE WHEN h.month IS NULL THEN f.platform ELSE r.platform END AS platform,
    CASE WHEN h.month IS NULL THEN f.channel ELSE r.channel END AS channel,
    f.source,
    CASE WHEN h.month IS NULL THEN f.campaign_key ELSE r.campaign_key END AS campaign_key,
    CASE WHEN h.month IS NULL THEN f.campaign END AS campaign,
    CASE WHEN h.month IS NULL THEN f.campaign_id ELSE r.campaign_id END AS campaign_id,
    f.day, f.spend, f.impressions, f.clicks, f.leads, f.leads_with_deal, f.deals, f.won_deals, f.priced_deals,
    f.revenue, f.new_customers, f.cycle_days, f.cycle_deals, f.unconverted_spend, f.unconverted_currency
  FROM facts AS f
  LEFT JOIN member_of AS m ON m.platform = f.platform AND m.campaign_key = f.campaign_key AND m.source = f.source
  LEFT JOIN shared_months AS h
    ON h.source = f.source AND h.campaign_key = m.shared_key AND h.month = date_trunc('month', f.day)
  LEFT JOIN roi_shared_rows AS r ON r.source = f.source AND r.campaign_key = m.shared_key
  WHERE f.kind <> 'shared'
  UNION ALL
  SELECT kind, platform, channel, source, campaign_key, campaign, campaign_id, day, spend, impressions, clicks, leads,
    leads_with_deal, deals, won_deals, priced_deals, revenue, new_customers, cycle_days, cycle_deals,
    unconverted_spend, unconverted_currency
  FROM facts WHERE kind = 'shared'
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
  CAST(sum(priced_deals) AS bigint) AS priced_deals,
  CAST(sum(revenue) AS decimal(38, 2)) AS revenue,
  CAST(sum(new_customers) AS bigint) AS new_customers,
  CAST(sum(cycle_days) AS bigint) AS cycle_days,
  CAST(sum(cycle_deals) AS bigint) AS cycle_deals,
  CAST(sum(unconverted_spend) AS decimal(38, 2)) AS unconverted_spend,
  max(unconverted_currency) AS unconverted_currency
FROM merged
GROUP BY kind, platform, channel, source, campaign_key, day;
