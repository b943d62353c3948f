"""Static description of the emulated portal: entity fields and the dictionaries a fresh portal starts with.

Field lists and their order follow the response examples of ``crm.lead.list``, ``crm.deal.get`` and
``crm.contact.get`` in the docs; dictionary entries follow ``crm.status.list`` and ``crm-lead-add.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "COMPANY",
    "COMPANY_TYPES",
    "CONTACT",
    "CURRENCIES",
    "DEAL",
    "DEAL_STAGES",
    "EMPLOYEES",
    "ENTITIES",
    "EXTRA_SEMANTICS",
    "LEAD",
    "LEAD_STATUSES",
    "SOURCES",
    "USERS",
    "EntitySpec",
    "Field",
]


# --------------------------------------------------------------------------------------------------------------------
# Entity schemas
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One standard field as ``crm.*.fields`` describes it."""

    name: str
    type: str
    title: str
    read_only: bool = False
    immutable: bool = False  # may be set on add, ignored on update (CATEGORY_ID of a deal)
    status_type: str | None = None


@dataclass(frozen=True)
class EntitySpec:
    name: str  # "lead"
    entity_id: str  # user-field owner id, "CRM_LEAD"
    event_prefix: str  # "ONCRMLEAD" + ADD/UPDATE/DELETE
    fields: tuple[Field, ...]
    has_multifields: bool

    def field(self, name: str) -> Field | None:
        return next((field for field in self.fields if field.name == name), None)


def _utm_fields() -> tuple[Field, ...]:
    return (
        Field("UTM_SOURCE", "string", "Advertising system"),
        Field("UTM_MEDIUM", "string", "Traffic type"),
        Field("UTM_CAMPAIGN", "string", "Campaign identifier"),
        Field("UTM_CONTENT", "string", "Campaign content"),
        Field("UTM_TERM", "string", "Campaign search term"),
    )


def _address_fields() -> tuple[Field, ...]:
    return (
        Field("ADDRESS", "string", "Address"),
        Field("ADDRESS_2", "string", "Address (line 2)"),
        Field("ADDRESS_CITY", "string", "City"),
        Field("ADDRESS_POSTAL_CODE", "string", "Postal code"),
        Field("ADDRESS_REGION", "string", "Region"),
        Field("ADDRESS_PROVINCE", "string", "Province"),
        Field("ADDRESS_COUNTRY", "string", "Country"),
        Field("ADDRESS_COUNTRY_CODE", "string", "Country code"),
        Field("ADDRESS_LOC_ADDR_ID", "integer", "Location address ID"),
    )


def _activity_fields() -> tuple[Field, ...]:
    return (
        Field("LAST_ACTIVITY_BY", "user", "Last activity by", read_only=True),
        Field("LAST_ACTIVITY_TIME", "datetime", "Last activity time", read_only=True),
    )


# Field order follows the crm.lead.list / crm.deal.get / crm.contact.get response examples in the docs.
LEAD = EntitySpec(
    name="lead",
    entity_id="CRM_LEAD",
    event_prefix="ONCRMLEAD",
    has_multifields=True,
    fields=(
        Field("ID", "integer", "ID", read_only=True),
        Field("TITLE", "string", "Lead Title"),
        Field("HONORIFIC", "crm_status", "Salutation", status_type="HONORIFIC"),
        Field("NAME", "string", "First Name"),
        Field("SECOND_NAME", "string", "Middle Name"),
        Field("LAST_NAME", "string", "Last Name"),
        Field("COMPANY_TITLE", "string", "Company Name"),
        Field("COMPANY_ID", "crm_company", "Company"),
        Field("CONTACT_ID", "crm_contact", "Contact"),
        Field("IS_RETURN_CUSTOMER", "char", "Returning Lead", read_only=True),
        Field("BIRTHDATE", "date", "Birthdate"),
        Field("SOURCE_ID", "crm_status", "Source", status_type="SOURCE"),
        Field("SOURCE_DESCRIPTION", "string", "Additional Source Information"),
        Field("STATUS_ID", "crm_status", "Stage", status_type="STATUS"),
        Field("STATUS_DESCRIPTION", "string", "Additional Stage Information"),
        Field("POST", "string", "Position"),
        Field("COMMENTS", "string", "Comment"),
        Field("CURRENCY_ID", "crm_currency", "Currency"),
        Field("OPPORTUNITY", "double", "Amount"),
        Field("IS_MANUAL_OPPORTUNITY", "char", "IS_MANUAL_OPPORTUNITY"),
        Field("HAS_PHONE", "char", "Phone Provided", read_only=True),
        Field("HAS_EMAIL", "char", "E-mail Provided", read_only=True),
        Field("HAS_IMOL", "char", "Open Channel Set", read_only=True),
        Field("ASSIGNED_BY_ID", "user", "Responsible User"),
        Field("CREATED_BY_ID", "user", "Created By", read_only=True),
        Field("MODIFY_BY_ID", "user", "Modified By", read_only=True),
        Field("DATE_CREATE", "datetime", "Creation Date", read_only=True),
        Field("DATE_MODIFY", "datetime", "Modification Date", read_only=True),
        Field("DATE_CLOSED", "datetime", "Closing Date", read_only=True),
        Field("STATUS_SEMANTIC_ID", "string", "Status Semantic", read_only=True),
        Field("OPENED", "char", "Available to All"),
        Field("ORIGINATOR_ID", "string", "External Source ID"),
        Field("ORIGIN_ID", "string", "Element ID in External Source"),
        Field("MOVED_BY_ID", "user", "MOVED_BY_ID", read_only=True),
        Field("MOVED_TIME", "datetime", "MOVED_TIME", read_only=True),
        *_address_fields(),
        *_utm_fields(),
        *_activity_fields(),
    ),
)

DEAL = EntitySpec(
    name="deal",
    entity_id="CRM_DEAL",
    event_prefix="ONCRMDEAL",
    has_multifields=False,
    fields=(
        Field("ID", "integer", "ID", read_only=True),
        Field("TITLE", "string", "Name"),
        Field("TYPE_ID", "crm_status", "Type", status_type="DEAL_TYPE"),
        Field("CATEGORY_ID", "crm_category", "Pipeline", immutable=True),
        Field("STAGE_ID", "crm_status", "Stage", status_type="DEAL_STAGE"),
        Field("STAGE_SEMANTIC_ID", "string", "Stage group", read_only=True),
        Field("IS_NEW", "char", "New deal", read_only=True),
        Field("IS_RECURRING", "char", "Recurring deal"),
        Field("IS_RETURN_CUSTOMER", "char", "Repeat deal", read_only=True),
        Field("IS_REPEATED_APPROACH", "char", "Repeat inquiry", read_only=True),
        Field("PROBABILITY", "integer", "Probability"),
        Field("CURRENCY_ID", "crm_currency", "Currency"),
        Field("OPPORTUNITY", "double", "Amount"),
        Field("IS_MANUAL_OPPORTUNITY", "char", "IS_MANUAL_OPPORTUNITY"),
        Field("TAX_VALUE", "double", "Tax rate"),
        Field("COMPANY_ID", "crm_company", "Company"),
        Field("CONTACT_ID", "crm_contact", "Contact"),
        Field("BEGINDATE", "date", "Start date"),
        Field("CLOSEDATE", "date", "Estimated close date"),
        Field("OPENED", "char", "Available to everyone"),
        Field("CLOSED", "char", "Closed", read_only=True),
        Field("COMMENTS", "string", "Comment"),
        Field("ASSIGNED_BY_ID", "user", "Responsible person"),
        Field("CREATED_BY_ID", "user", "Created by", read_only=True),
        Field("MODIFY_BY_ID", "user", "Modified by", read_only=True),
        Field("MOVED_BY_ID", "user", "MOVED_BY_ID", read_only=True),
        Field("DATE_CREATE", "datetime", "Created on", read_only=True),
        Field("DATE_MODIFY", "datetime", "Modified on", read_only=True),
        Field("MOVED_TIME", "datetime", "MOVED_TIME", read_only=True),
        Field("SOURCE_ID", "crm_status", "Source", status_type="SOURCE"),
        Field("SOURCE_DESCRIPTION", "string", "Source information"),
        Field("LEAD_ID", "crm_lead", "Lead", read_only=True),
        Field("ADDITIONAL_INFO", "string", "Additional information"),
        Field("LOCATION_ID", "string", "Location"),
        Field("ORIGINATOR_ID", "string", "External source"),
        Field("ORIGIN_ID", "string", "Item ID in data source"),
        *_utm_fields(),
        *_activity_fields(),
    ),
)

CONTACT = EntitySpec(
    name="contact",
    entity_id="CRM_CONTACT",
    event_prefix="ONCRMCONTACT",
    has_multifields=True,
    fields=(
        Field("ID", "integer", "ID", read_only=True),
        Field("HONORIFIC", "crm_status", "Salutation", status_type="HONORIFIC"),
        Field("NAME", "string", "First name"),
        Field("SECOND_NAME", "string", "Second name"),
        Field("LAST_NAME", "string", "Last name"),
        Field("BIRTHDATE", "date", "Date of birth"),
        Field("TYPE_ID", "crm_status", "Contact type", status_type="CONTACT_TYPE"),
        Field("SOURCE_ID", "crm_status", "Source", status_type="SOURCE"),
        Field("SOURCE_DESCRIPTION", "string", "Source information"),
        Field("POST", "string", "Position"),
        Field("COMMENTS", "string", "Comment"),
        Field("OPENED", "char", "Available to everyone"),
        Field("EXPORT", "char", "Included in export"),
        Field("HAS_PHONE", "char", "Has phone", read_only=True),
        Field("HAS_EMAIL", "char", "Has email", read_only=True),
        Field("HAS_IMOL", "char", "Has Open Channel", read_only=True),
        Field("ASSIGNED_BY_ID", "user", "Responsible person"),
        Field("CREATED_BY_ID", "user", "Created by", read_only=True),
        Field("MODIFY_BY_ID", "user", "Modified by", read_only=True),
        Field("DATE_CREATE", "datetime", "Created on", read_only=True),
        Field("DATE_MODIFY", "datetime", "Modified on", read_only=True),
        Field("COMPANY_ID", "crm_company", "Company"),
        Field("LEAD_ID", "crm_lead", "Lead", read_only=True),
        Field("ORIGINATOR_ID", "string", "External source"),
        Field("ORIGIN_ID", "string", "Item ID in data source"),
        Field("ORIGIN_VERSION", "string", "Original version"),
        *_address_fields(),
        *_utm_fields(),
        *_activity_fields(),
    ),
)

# Companies: the field list of the crm.company.get response example (the fields a journey reads, and the common ones).
COMPANY = EntitySpec(
    name="company",
    entity_id="CRM_COMPANY",
    event_prefix="ONCRMCOMPANY",
    has_multifields=True,
    fields=(
        Field("ID", "integer", "ID", read_only=True),
        Field("COMPANY_TYPE", "crm_status", "Company type", status_type="COMPANY_TYPE"),
        Field("TITLE", "string", "Company name"),
        Field("LEAD_ID", "crm_lead", "Lead", read_only=True),
        Field("HAS_PHONE", "char", "Has phone", read_only=True),
        Field("HAS_EMAIL", "char", "Has email", read_only=True),
        Field("HAS_IMOL", "char", "Has Open Channel", read_only=True),
        Field("ASSIGNED_BY_ID", "user", "Responsible person"),
        Field("CREATED_BY_ID", "user", "Created by", read_only=True),
        Field("MODIFY_BY_ID", "user", "Modified by", read_only=True),
        Field("INDUSTRY", "crm_status", "Industry", status_type="INDUSTRY"),
        Field("EMPLOYEES", "crm_status", "Number of Employees", status_type="EMPLOYEES"),
        Field("CURRENCY_ID", "crm_currency", "Currency"),
        Field("REVENUE", "double", "Annual revenue"),
        Field("COMMENTS", "string", "Comment"),
        Field("DATE_CREATE", "datetime", "Created on", read_only=True),
        Field("DATE_MODIFY", "datetime", "Modified on", read_only=True),
        Field("OPENED", "char", "Available to everyone"),
        Field("IS_MY_COMPANY", "char", "My Company"),
        Field("ORIGINATOR_ID", "string", "External source"),
        Field("ORIGIN_ID", "string", "Item ID in data source"),
        *_utm_fields(),
        *_activity_fields(),
    ),
)

ENTITIES: dict[str, EntitySpec] = {spec.name: spec for spec in (LEAD, DEAL, CONTACT, COMPANY)}


# --------------------------------------------------------------------------------------------------------------------
# Seeded dictionaries
# --------------------------------------------------------------------------------------------------------------------

# Russian names, as a Russian-language portal has them. Sources: (STATUS_ID, NAME).
SOURCES = (
    ("CALL", "Звонок"),
    ("EMAIL", "Электронная почта"),
    ("WEB", "Веб-сайт"),
    ("ADVERTISING", "Реклама"),
    ("PARTNER", "Существующий клиент"),
    ("RECOMMENDATION", "По рекомендации"),
    ("TRADE_SHOW", "Выставка"),
    ("WEBFORM", "CRM-форма"),
    ("CALLBACK", "Обратный звонок"),
    ("RC_GENERATOR", "Генератор продаж"),
    ("STORE", "Интернет-магазин"),
    ("OTHER", "Другое"),
)
# Stages: (STATUS_ID, NAME, SEMANTICS, EXTRA.SEMANTICS, COLOR, SYSTEM), as crm.status.list describes them.
LEAD_STATUSES = (
    ("NEW", "Не обработан", None, "process", "#39A8EF", "Y"),
    ("IN_PROCESS", "В работе", None, "process", "#2FC6F6", "N"),
    ("PROCESSED", "Обработан", None, "process", "#55D0E0", "N"),
    ("CONVERTED", "Качественный лид", "S", "success", "#7BD500", "Y"),
    ("JUNK", "Некачественный лид", "F", "failure", "#FF5752", "Y"),
)
# APOLOGY is a failure stage too (SEMANTICS "F", EXTRA.SEMANTICS "apology"), as crm-status-list.md shows.
DEAL_STAGES = (
    ("NEW", "Новая", None, "process", "#39A8EF", "Y"),
    ("PREPARATION", "Подготовка документов", None, "process", "#2FC6F6", "N"),
    ("PREPAYMENT_INVOICE", "Счёт на предоплату", None, "process", "#55D0E0", "N"),
    ("EXECUTING", "В работе", None, "process", "#47E4C2", "N"),
    ("FINAL_INVOICE", "Финальный счёт", None, "process", "#FFA900", "N"),
    ("WON", "Сделка успешна", "S", "success", "#7BD500", "Y"),
    ("LOSE", "Сделка провалена", "F", "failure", "#FF5752", "Y"),
    ("APOLOGY", "Анализ причины провала", "F", "apology", "#FF5752", "N"),
)
# crm.company.fields: COMPANY_TYPE and EMPLOYEES are crm_status fields (statusType COMPANY_TYPE, EMPLOYEES); a fresh
# portal's lists (crm.status.list ENTITY_ID=EMPLOYEES answers EMPLOYEES_1 «менее 50» …). (STATUS_ID, NAME).
COMPANY_TYPES = (
    ("CUSTOMER", "Клиент"),
    ("SUPPLIER", "Поставщик"),
    ("COMPETITOR", "Конкурент"),
    ("PARTNER", "Партнер"),
    ("OTHER", "Другое"),
)
EMPLOYEES = (
    ("EMPLOYEES_1", "менее 50"),
    ("EMPLOYEES_2", "50-250"),
    ("EMPLOYEES_3", "250-500"),
    ("EMPLOYEES_4", "более 500"),
)
EXTRA_SEMANTICS = {None: "process", "S": "success", "F": "failure"}  # for stages added through crm.status.add

USERS = (
    ("Анна", "Смирнова", "anna.smirnova@example.ru", "Руководитель отдела продаж"),
    ("Иван", "Петров", "ivan.petrov@example.ru", "Менеджер по продажам"),
    ("Ольга", "Кузнецова", "olga.kuznetsova@example.ru", "Маркетолог"),
)

CURRENCIES = (
    ("RUB", "Российский рубль", "1.0000", "Y", 100, "# ₽"),
    ("USD", "Доллар США", "90.0000", "N", 200, "$#"),
    ("EUR", "Евро", "98.0000", "N", 300, "€#"),
    ("KZT", "Казахстанский тенге", "0.1850", "N", 400, "# ₸"),
)


# --------------------------------------------------------------------------------------------------------------------
# Activities (crm.activity.*): calls, e-mails, meetings, tasks, open-channel chats in the timeline
# --------------------------------------------------------------------------------------------------------------------

# Field list and types follow crm-activity-fields.md; the crm_enum_* types are integers on the wire (as strings).
ACTIVITY = EntitySpec(
    name="activity",
    entity_id="CRM_ACTIVITY",
    event_prefix="ONCRMACTIVITY",
    has_multifields=False,
    fields=(
        Field("ID", "integer", "ID", read_only=True),
        Field("OWNER_ID", "integer", "Owner ID", immutable=True),
        Field("OWNER_TYPE_ID", "integer", "Owner Type", immutable=True),
        Field("TYPE_ID", "integer", "Type", immutable=True),
        Field("PROVIDER_ID", "string", "Provider ID"),
        Field("PROVIDER_TYPE_ID", "string", "Provider Type"),
        Field("ASSOCIATED_ENTITY_ID", "integer", "ID of the entity associated with the activity", read_only=True),
        Field("SUBJECT", "string", "Subject"),
        Field("CREATED", "datetime", "Creation Date", read_only=True),
        Field("LAST_UPDATED", "datetime", "Last Updated", read_only=True),
        Field("START_TIME", "datetime", "Start"),
        Field("END_TIME", "datetime", "Deadline"),
        Field("DEADLINE", "datetime", "Due Date", read_only=True),
        Field("COMPLETED", "char", "Completed"),
        Field("STATUS", "integer", "Status"),
        Field("RESPONSIBLE_ID", "user", "Responsible"),
        Field("PRIORITY", "integer", "Priority"),
        Field("DESCRIPTION", "string", "Description"),
        Field("DESCRIPTION_TYPE", "integer", "Description Type"),
        Field("DIRECTION", "integer", "Direction"),
        Field("LOCATION", "string", "Location"),
        Field("AUTHOR_ID", "user", "Created By", read_only=True),
        Field("EDITOR_ID", "user", "Edited By", read_only=True),
        Field("ORIGINATOR_ID", "string", "External Source"),
        Field("ORIGIN_ID", "string", "External Code"),
    ),
)
ENTITIES[ACTIVITY.name] = ACTIVITY
