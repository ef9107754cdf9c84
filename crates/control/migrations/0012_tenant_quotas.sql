-- Quotas per tenant, over all of its projects (JSON, like projects.quota).
ALTER TABLE tenants ADD COLUMN quota TEXT NOT NULL DEFAULT '{}';
