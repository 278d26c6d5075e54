-- What the operator requires of a supplier includes a vulnerability disclosure
-- contact (ETSI EN 303 645 provision 5.2): a mailto: or https: address.
ALTER TABLE suppliers ADD COLUMN disclosure_contact TEXT;
