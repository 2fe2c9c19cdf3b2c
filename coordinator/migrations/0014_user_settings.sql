-- Per-user settings: the dotfiles repository applied to each new workspace
-- (docs/repositories.md, "Dotfiles"); empty: none.
CREATE TABLE user_settings (
    user_name TEXT PRIMARY KEY,
    dotfiles TEXT NOT NULL DEFAULT ''
);
