"""Ad spend: the nightly import from Yandex Direct, Google Ads, VK Ads and manual CSV files into S3 partitions."""
