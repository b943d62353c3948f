-- roi_by_channel: the main table's aggregate rows by calendar month: level 'total' (the headline), 'channel' and
-- 'source'. DESIGN.md's paid rule: the cost ratios (CPL, CPO, CAC, ROMI, ROI, ROAS, ДРР) count only the leads, won
-- deals, new customers and revenue of the campaign rows that carry spend in the month (paid_*); the rest is shown
-- beside them (unpaid_*), never mixed in; the revenue of rows whose only spend has no exchange rate («нет курса») is
-- no_rate_revenue, neither paid nor unpaid. CTR, CPC and CPM come from spend rows; CR (cohort) and the average check
-- count every row (the average check: the won deals whose amount is money).
-- Ratios as throughline.report.metrics computes them: money to kopecks and percentages to hundredths, half up; an
-- empty cell (nothing to divide by, or a cost ratio of a row without spend) is NULL. They are computed in double and
-- rounded with a 1e-6 margin so an exact half rounds up in both engines (DuckDB divides decimals in double).
CREATE OR REPLACE VIEW roi_by_channel AS
WITH campaign_rows AS (
  SELECT *, spend <> 0 AS paid
  FROM roi_campaign_month
  WHERE spend <> 0 OR leads <> 0 OR deals <> 0 OR won_deals <> 0 OR impressions <> 0
),
grouped AS (
  SELECT
    month,
    CASE WHEN grouping(channel) = 1 THEN 'total' WHEN grouping(source) = 1 THEN 'channel' ELSE 'source' END AS level,
    channel, source,
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
    CAST(sum(CASE WHEN paid THEN leads ELSE 0 END) AS bigint) AS paid_leads,
    CAST(sum(CASE WHEN paid THEN won_deals ELSE 0 END) AS bigint) AS paid_won_deals,
    CAST(sum(CASE WHEN paid THEN new_customers ELSE 0 END) AS bigint) AS paid_new_customers,
    CAST(sum(CASE WHEN paid THEN revenue ELSE 0 END) AS decimal(38, 2)) AS paid_revenue,
    CAST(sum(CASE WHEN NOT paid AND unconverted_spend <> 0 THEN revenue ELSE 0 END) AS decimal(38, 2)) AS no_rate_revenue
  FROM campaign_rows
  GROUP BY GROUPING SETS ((month), (month, channel), (month, channel, source))
),
raw AS (
  SELECT *,
    CAST(clicks AS double) * 100 / nullif(impressions, 0) AS ctr,
    CASE WHEN spend <> 0 THEN CAST(spend AS double) / nullif(clicks, 0) END AS cpc,
    CASE WHEN spend <> 0 THEN CAST(spend AS double) * 1000 / nullif(impressions, 0) END AS cpm,
    CASE WHEN spend <> 0 THEN CAST(spend AS double) / nullif(paid_leads, 0) END AS cpl,
    CAST(leads_with_deal AS double) * 100 / nullif(leads, 0) AS cr,
    CAST(revenue AS double) / nullif(priced_deals, 0) AS average_check,
    CASE WHEN spend <> 0 THEN CAST(spend AS double) / nullif(paid_won_deals, 0) END AS cpo,
    CASE WHEN spend <> 0 THEN CAST(spend AS double) / nullif(paid_new_customers, 0) END AS cac,
    CAST(paid_revenue - spend AS double) * 100 / nullif(CAST(spend AS double), 0) AS romi,
    CAST(paid_revenue - spend AS double) * 100 / nullif(CAST(spend AS double), 0) AS roi,
    CAST(paid_revenue AS double) * 100 / nullif(CAST(spend AS double), 0) AS roas,
    CASE WHEN spend <> 0 THEN CAST(spend AS double) * 100 / nullif(CAST(paid_revenue AS double), 0) END AS drr,
    CAST(cycle_days AS double) / nullif(cycle_deals, 0) AS sales_cycle_days
  FROM grouped
)
SELECT
  month, level, channel, source,
  impressions, clicks, spend, leads, leads_with_deal, deals, won_deals, revenue, new_customers,
  paid_leads, paid_won_deals, paid_new_customers, paid_revenue,
  leads - paid_leads AS unpaid_leads,
  won_deals - paid_won_deals AS unpaid_won_deals,
  revenue - paid_revenue - no_rate_revenue AS unpaid_revenue,
  no_rate_revenue,
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
