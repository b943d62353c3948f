-- roi_campaign_month: the report's campaign rows by calendar month (sums only; roi_by_campaign adds the ratios).
CREATE OR REPLACE VIEW roi_campaign_month AS
SELECT
  CAST(date_trunc('month', day) AS date) AS month,
  kind, platform, channel, source, campaign_key,
  max(campaign) AS campaign,
  max(campaign_id) AS campaign_id,
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
FROM roi_facts
GROUP BY CAST(date_trunc('month', day) AS date), kind, platform, channel, source, campaign_key;

-- roi_by_campaign: the main table's campaign rows by calendar month (a month's report run over that whole month).
-- matched is the report's: 'no_rate' for a «нет курса» row (spend in unconverted_currency without a rate, out of
-- spend and every ratio); the average check counts the won deals whose amount is money (priced_deals).
-- cr is DESIGN.md's cohort rate: the month's leads that became deals, over the month's leads.
-- Ratios as throughline.report.metrics computes them: money to kopecks and percentages to hundredths, half up; an
-- empty cell (nothing to divide by, or a cost ratio of a row without spend) is NULL. They are computed in double and
-- rounded with a 1e-6 margin so an exact half rounds up in both engines (DuckDB divides decimals in double).
CREATE OR REPLACE VIEW roi_by_campaign AS
WITH raw AS (
  SELECT *,
    CASE
      WHEN kind IN ('spend', 'shared') AND spend <> 0 THEN
        CASE WHEN leads + deals + won_deals > 0 THEN 'spend_and_leads' ELSE 'spend_only' END
      WHEN unconverted_spend <> 0 THEN 'no_rate'
      WHEN leads + deals + won_deals > 0 THEN 'leads_only'
      ELSE 'none'
    END AS matched,
    CAST(clicks AS double) * 100 / nullif(impressions, 0) AS ctr,
    CASE WHEN spend <> 0 THEN CAST(spend AS double) / nullif(clicks, 0) END AS cpc,
    CASE WHEN spend <> 0 THEN CAST(spend AS double) * 1000 / nullif(impressions, 0) END AS cpm,
    CASE WHEN spend <> 0 THEN CAST(spend AS double) / nullif(leads, 0) END AS cpl,
    CAST(leads_with_deal AS double) * 100 / nullif(leads, 0) AS cr,
    CAST(revenue AS double) / nullif(priced_deals, 0) AS average_check,
    CASE WHEN spend <> 0 THEN CAST(spend AS double) / nullif(won_deals, 0) END AS cpo,
    CASE WHEN spend <> 0 THEN CAST(spend AS double) / nullif(new_customers, 0) END AS cac,
    CAST(revenue - spend AS double) * 100 / nullif(CAST(spend AS double), 0) AS romi,
    CAST(revenue - spend AS double) * 100 / nullif(CAST(spend AS double), 0) AS roi,
    CAST(revenue AS double) * 100 / nullif(CAST(spend AS double), 0) AS roas,
    CASE WHEN spend <> 0 THEN CAST(spend AS double) * 100 / nullif(CAST(revenue AS double), 0) END AS drr,
    CAST(cycle_days AS double) / nullif(cycle_deals, 0) AS sales_cycle_days
  FROM roi_campaign_month
  WHERE spend <> 0 OR leads <> 0 OR deals <> 0 OR won_deals <> 0 OR impressions <> 0 OR unconverted_spend <> 0
)
SELECT
  month, channel, source, campaign, campaign_id, nullif(platform, '') AS platform, matched,
  impressions, clicks, spend, leads, leads_with_deal, deals, won_deals, priced_deals, revenue, new_customers,
  nullif(unconverted_spend, 0) AS unconverted_spend,
  CASE WHEN unconverted_spend <> 0 THEN unconverted_currency END AS unconverted_currency,
  CAST(sign(ctr) * floor(abs(ctr) * 100 + 0.500001) / 100 AS decimal(38, 2)) AS ctr,
  CAST(sign(cpc) * floor(abs(cpc) * 100 + 0.500001) / 100 AS decimal(38, 2)) AS cpc,
  CAST(sign(cpm) * floor(abs(cpm) * 100 + 0.500001) / 100 AS decimal(38, 2)) AS cpm,
  CAST(sign(cpl) * floor(abs(cpl) * 100 + 0.500001) / 100 AS decimal(38, 2)) AS cpl,
  CAST(sign(cr) * floor(abs(cr) * 100 + 0.500001) / 100 AS decimal(38, 2)) AS cr,
  CAST(sign(average_check) * floor(abs(average_check) * 100 + 0.500001) / 100 AS decimal(38, 2)) AS average_check,
  CAST(sign(cpo) * floor(abs(cpo) * 100 + 0.500001) / 100 AS decimal(38, 2)) AS cpo,
  CAST(sign(cac) * floor(abs(cac) * 100 + 0.500001) / 100 AS decimal(38, 2)) AS cac,
  CAST(sign(romi) * floor(abs(romi) * 100 + 0.500001) / 100 AS decimal(38, 2)) AS romi,
  CAST(sign(roi) * floor(abs(roi) * 100 + 0.500001) / 100 AS decimal(38, 2)) AS roi,
  CAST(sign(roas) * floor(abs(roas) * 100 + 0.500001) / 100 AS decimal(38, 2)) AS roas,
  CAST(sign(drr) * floor(abs(drr) * 100 + 0.500001) / 100 AS decimal(38, 2)) AS drr,
  CAST(sign(sales_cycle_days) * floor(abs(sales_cycle_days) * 10 + 0.500001) / 10 AS decimal(38, 1)) AS sales_cycle_days
FROM raw;
