DROP TABLE mfa_challenges;
DROP TABLE mfa_recovery_codes;
DROP TABLE user_mfa;
