"""Built-in stage families, one module per family.

Each module is a plugin: it registers its stage classes through `aigc_register_stages`, the same
hook third-party plugins use. The engine lists these modules only in
`plugin_manager.BUILTIN_PLUGINS`; nothing else imports them by name.
"""
