"""The nightly ROI report: metrics per channel / source / campaign, funnels, data quality.

Outputs roi.json, roi.csv and index.html.
"""
