-- Quotas per project (JSON: max_apps, max_instances, max_memory_bytes, max_volume_bytes).
ALTER TABLE projects ADD COLUMN quota TEXT NOT NULL DEFAULT '{}';
