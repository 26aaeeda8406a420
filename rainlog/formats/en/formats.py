"""One way to write a time across the admin: ISO-like, in UTC, which every time is stored in.

Django formats dates by locale; this module replaces the English locale's formats
(FORMAT_MODULE_PATH in rainlog/settings.py).
"""

DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
DATETIME_FORMAT = r"Y-m-d H:i:s \U\T\C"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = r"Y-m-d H:i \U\T\C"
MONTH_DAY_FORMAT = "m-d"
YEAR_MONTH_FORMAT = "Y-m"
FIRST_DAY_OF_WEEK = 1
