from django.contrib.admin.apps import AdminConfig


class OperatorAdminConfig(AdminConfig):
    # admin.site (and every @admin.register) becomes costlab.auth.OperatorAdminSite.
    default_site = "costlab.auth.OperatorAdminSite"
