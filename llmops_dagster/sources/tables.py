"""Raw table names per source kind, apart from the sources themselves: the documents step needs
the names without importing dlt's SQL/REST machinery (sqlalchemy alone costs ~0.2 s)."""

FS_TABLE = "fs_files"
API_TABLE_PREFIX = "api_"
SQL_TABLE_PREFIX = "sql_"
