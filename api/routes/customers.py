"""Customer look-up (permission ``customer.read``): one customer with everything about it, a search
by name or mobile, and each of its lists page by page. The queries are ledger/customer_view.py's.

Mobile numbers: in full in ``GET /v1/customers/{customer_no}`` (whoever looks a customer up by
number confirms the number with the caller), masked (138****0000) in every list; a search by mobile
matches the whole number only.
"""
from __future__ import annotations

from typing import Callable

from fastapi import APIRouter, Depends, Path, Query

from api.deps import ApiContext, context, require
from api.pagination import CURSOR, LIMIT, Page, PageRequest, page_of, page_request
from api.problems import Problem, problem_responses
from api.routes.customer_models import (
    AgreementOut, BillOut, CustomerDetail, CustomerSummary, DebitOut, MovementOut, NoticeOut, PaymentOut,
)
from ledger import customer_view as view
from ledger.identity import Principal

router = APIRouter(tags=["customers"], responses=problem_responses(400, 401, 403, 404, 422))

READ = require("customer.read")
CUSTOMER_NO = Path(min_length=1, max_length=20, pattern=r"^[^\x00-\x1f\x7f/]+$")


# each list: (its query, the shape of its cursor's key, the key of a row, its item model)
LISTS: dict[str, tuple[Callable, tuple[type, ...], Callable[[dict], tuple], type]] = {
    "bills": (view.bill_page, (str, str), lambda r: (r["period"], r["bill_id"]), BillOut),
    "payments": (view.payment_page, (int,), lambda r: (r["payment_id"],), PaymentOut),
    "prepaid_movements": (view.movement_page, (int,), lambda r: (r["id"],), MovementOut),
    "debits": (view.debit_page, (int,), lambda r: (r["debit_id"],), DebitOut),
    "notices": (view.notice_page, (int,), lambda r: (r["id"],), NoticeOut),
}


def _list_page(conn, name: str, customer_no: str, page: PageRequest) -> Page:
    query, _, key_of, model = LISTS[name]
    return page_of(model, page, lambda after, n: query(conn, customer_no, after, n), key_of, model.of)


def _existing(conn, customer_no: str) -> dict:
    found = view.customer(conn, customer_no)
    if found is None:
        raise Problem("not-found", f"no customer {customer_no}")
    return found


@router.get("/v1/customers", response_model=Page[CustomerSummary])
def search_customers(name: str | None = Query(None, min_length=1, max_length=120, pattern=r"^[^\x00-\x1f\x7f]+$",
                                              description="part of the name"),
                     mobile: str | None = Query(None, pattern=r"^[0-9]{11}$", description="the whole mobile number"),
                     cursor: str | None = CURSOR, limit: int | None = LIMIT,
                     principal: Principal = Depends(READ), ctx: ApiContext = Depends(context)) -> Page:
    """Customers by name (contains) and/or mobile (the whole number), by customer number; mobiles masked."""
    if not (name or mobile):
        raise Problem("invalid-request", "give name or mobile (or both)")
    page = page_request(ctx.settings.api, cursor, limit, (str,))
    with view.snapshot(ctx.engine) as conn:
        return page_of(CustomerSummary, page, lambda after, n: view.search(conn, name=name, mobile=mobile, after=after, limit=n),
                       lambda r: (r["customer_no"],), CustomerSummary.of)


@router.get("/v1/customers/{customer_no}", response_model=CustomerDetail)
def get_customer(customer_no: str = CUSTOMER_NO, principal: Principal = Depends(READ),
                 ctx: ApiContext = Depends(context)) -> CustomerDetail:
    """One customer: prepaid balance and movements, bills with their corrections, payments with their
    reversals, debit agreements, debits with their attempts, SMS notices (each list's first page)."""
    return customer_detail(ctx, customer_no)


def customer_detail(ctx: ApiContext, customer_no: str) -> CustomerDetail:
    """What ``GET /v1/customers/{customer_no}`` answers (the console's customer view shows the same),
    or a not-found ``Problem``."""
    first = PageRequest(None, ctx.settings.api.page_limit_default)
    with view.snapshot(ctx.engine) as conn:
        row = _existing(conn, customer_no)
        lists = {name: _list_page(conn, name, customer_no, first) for name in LISTS}
        agreements = [AgreementOut.of(a) for a in view.agreement_list(conn, customer_no)]
    return CustomerDetail(
        customer_no=row["customer_no"], name=row["customer_name"], customer_type=row["customer_type"],
        status=row["status"], prepay_allowed=row["prepay_allowed"] == "Y", mobile=row["mobile"],
        district=row["district"], collection_type=row["collection_type"], updated_at=row["updated_at"],
        prepaid_balance_fen=row["prepaid_balance"], agreements=agreements, **lists)


def _list_route(name: str, summary: str):
    model = LISTS[name][3]
    shape = LISTS[name][1]

    def endpoint(customer_no: str = CUSTOMER_NO, cursor: str | None = CURSOR, limit: int | None = LIMIT,
                 principal: Principal = Depends(READ), ctx: ApiContext = Depends(context)) -> Page:
        page = page_request(ctx.settings.api, cursor, limit, shape)
        with view.snapshot(ctx.engine) as conn:
            _existing(conn, customer_no)
            return _list_page(conn, name, customer_no, page)

    endpoint.__name__ = f"list_customer_{name}"
    endpoint.__doc__ = summary
    path = name.replace("_", "-")
    router.add_api_route(f"/v1/customers/{{customer_no}}/{path}", endpoint, methods=["GET"],
                         response_model=Page[model], name=endpoint.__name__)


_list_route("bills", "A customer's bills, newest period first, with their red reversals and replacements.")
_list_route("payments", "A customer's payments, newest first, each with its reversal.")
_list_route("prepaid_movements", "A customer's prepaid movements, newest first (their sum is the balance).")
_list_route("debits", "A customer's direct debits, newest first, each with its attempts.")
_list_route("notices", "The SMS notices sent (or to be sent) to a customer, newest first.")
