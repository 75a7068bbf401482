-- Usernames in the throttle table were kept as typed (lower-cased) for up to an hour; they are
-- now keyed by HMAC (src/throttle/login.ts), as the audit log keeps them, and per network as
-- well as across networks. The old counts cannot be converted (the typed name is what is
-- hashed), so they are dropped: at worst a username's delay in force ends early, once.
delete from throttle where kind = 'login_user';
