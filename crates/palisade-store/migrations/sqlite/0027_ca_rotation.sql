-- CA rotation: which CA certificate issued each certificate (the issuing
-- CA's serial; '' for self-signed roots and for certificates recorded before
-- rotation existed, all of which came from the first issuing CA). Each
-- issuing CA's CRL lists its own certificates, and an issuing CA that is no
-- longer current stays trusted while a certificate it issued is unexpired.
ALTER TABLE certificates ADD COLUMN issuer TEXT NOT NULL DEFAULT '';
CREATE INDEX certificates_by_issuer ON certificates (issuer, not_after_ms);
